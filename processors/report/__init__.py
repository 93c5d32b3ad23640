"""Reports over what the engine decided: did the small moments pay off (section 9)."""
