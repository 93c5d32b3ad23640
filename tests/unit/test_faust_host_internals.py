"""The contract with faust-streaming, mode and aiokafka: every internal the worker uses is there.

One test per entry of `processors.faust_host.internals.INTERNALS`, named after
the member; a failure says what changed and what to re-review.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from processors.faust_host import consumer, internals, recovery
from processors.faust_host.internals import INTERNALS, Internal

_PACKAGE = Path(internals.__file__).parent


@pytest.mark.parametrize("internal", INTERNALS, ids=[i.member for i in INTERNALS])
def test_the_installed_packages_still_have_what_the_worker_relies_on(internal: Internal) -> None:
    member, name = internal.member, internal.name
    if internal.assigned_in is None:
        try:
            found = internals.resolve(member)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{member} is gone ({exc}): re-review its use: {internal.use}")
    else:
        assigned = internals.source_of(internal.assigned_in)
        assert re.search(rf"self\.{re.escape(name)}\s*[:=]", assigned), (
            f"{member}: no longer assigned in {internal.assigned_in}; "
            f"re-review its use: {internal.use}"
        )
    for reader in internal.read_in:
        assert re.search(rf"\b{re.escape(name)}\b", internals.source_of(reader)), (
            f"{member}: no longer used by {reader}; re-review its use: {internal.use}"
        )
    if internal.parameters is not None:
        installed = internals.parameters(found)
        assert installed == internal.parameters, (
            f"{member}: parameters changed from {internal.parameters} to {installed}; "
            f"re-review its use: {internal.use}"
        )
    for text in internal.mentions:
        assert text in internals.source_of(member), (
            f"{member}: its source no longer contains {text!r}; re-review its use: {internal.use}"
        )
    if internal.copied_sha256 is not None:
        assert internals.source_sha256(member) == internal.copied_sha256, (
            f"{member} changed upstream since the worker copied it: compare it with the copy "
            f"({internal.use}), port the change, then record the new hash"
        )


def test_the_copied_drain_loop_is_the_one_the_consumer_uses() -> None:
    copy = inspect.getsource(consumer.WorkerConsumer._drain_messages)
    assert "async def _drain_messages(self, fetcher" in copy
    assert consumer.WorkerConsumer._drain_messages is not consumer.AIOKafkaConsumer._drain_messages


def _private_names(tree: ast.AST) -> set[str]:
    """Private attributes used, and private names imported from faust/mode/aiokafka."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _HOSTS:
            names |= {alias.name for alias in node.names if alias.name.startswith("_")}
        private = isinstance(node, ast.Attribute) and node.attr.startswith("_")
        if private and not node.attr.startswith("__"):
            names.add(node.attr)
    return names


def _own_names(tree: ast.AST) -> set[str]:
    """Names our code defines: functions, classes, assigned names and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.attr)
    return names


_HOSTS = ("faust", "mode", "aiokafka")
#: Our subclasses of faust classes.
_SUBCLASSES = (
    consumer.WorkerConsumer,
    consumer.WorkerConsumerThread,
    recovery.FencingRecovery,
    recovery.FencingTableManager,
)
_FAUST_BASES = {base for cls in _SUBCLASSES for base in cls.__mro__[1:]}
#: Members the copied drain loop and batch generator use: the originals' (checked by their
#: hashes).
_OF_THE_COPY = {
    "_stopped",
    "_read_offset",
    "_commit_every",
    "_n_acked",
    "_add_gap",
    "_enable_passive",
    "_processors",
}


def test_every_private_faust_member_the_worker_touches_is_listed() -> None:
    """A private name used by the host package or the worker is listed, or is our own."""
    listed = {internal.name for internal in INTERNALS}
    sources = [*sorted(_PACKAGE.glob("*.py")), _PACKAGE.parent / "worker.py"]
    trees = [ast.parse(path.read_text()) for path in sources]
    inherited = {name for base in _FAUST_BASES for name in dir(base)}
    ours = set().union(*(_own_names(tree) for tree in trees)) - listed - inherited
    used = set().union(*(_private_names(tree) for tree in trees))
    assert {"_build_highwaters", "_current_event", "_fetch_max_wait_ms"} <= used  # it sees them
    unlisted = used - listed - ours - _OF_THE_COPY
    assert not unlisted, (
        f"private faust/mode/aiokafka members used but not listed in "
        f"processors.faust_host.internals: {sorted(unlisted)}"
    )


@pytest.mark.parametrize("subclass", _SUBCLASSES, ids=lambda cls: cls.__name__)
def test_every_private_method_we_override_is_listed(subclass: type) -> None:
    """An override of a private method (e.g. `_build_highwaters`) is listed."""
    listed = {internal.name for internal in INTERNALS}
    overridden = {
        name
        for name in vars(subclass)
        if name.startswith("_")
        and not name.startswith("__")
        and name != "_abc_impl"  # set by ABCMeta on every class
        and any(hasattr(base, name) for base in subclass.__mro__[1:])
    }
    assert overridden <= listed, f"{subclass.__name__} overrides unlisted {overridden - listed}"
