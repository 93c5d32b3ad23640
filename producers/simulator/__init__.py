"""The journey simulator: a population of customers living through days of small moments.

`simulate(customers, days, seed)` plans what a realistic population does over
time (accounts opened, monthly invoices, payments of which some fail, dunning,
meter readings people make and smart meters upload, disputes and complaints
with resolutions of which some never come, life events that end in
cancellations, moves, feedback, inquiries over every channel with a daily
rhythm, omnichannel bursts, long-tenured customers, consent) and embeds each
seed story of docs/design.md 5.2 at a configurable rate. It also plays the
untidy truth of docs/design.md section 11: cases opened without a reference or
raised again on other channels, resolutions naming no case, several products
cancelled in one sitting, new products' billing rows carrying their own, younger
start date, and long-held products whose history starts before the period.
Customers respond to the engagement actions they would receive (`Effects`: an
explained first bill means fewer disputes, a thanked reading more readings), so
`moments report uplift` has a true effect to find, or none when the sizes are 0.
With `Rates.teams` the teams behind the destinations act on the engine's actions
(`teams`: acknowledged, reassigned, done or never, status events on channel `other`),
and an effect follows only the actions a team completed (docs/design.md 12.8).

Every moment is rendered as the record its channel system would export (a
contact-centre row, an e-mail, a billing export row, a web JSON event) and sent
through the same adapters `moments ingest` and the collector use, so the
simulator exercises them; the preference centre and smart meters send their own
JSON events. The output is deterministic for a seed (no wall clock, no global
random state) and in arrival order: by `occurred_at` across all customers,
except a few records delivered late (most within the allowed lateness, a few
days too late) and some delivered twice (`Rates.late` ... `redelivered_late`).

`write_simulation` writes the events as JSON lines (the form `moments replay`
reads), optionally in two processes; `publish_simulation` sends them through the
publisher SDK. This module never talks to Kafka itself.

The modules, one job each:

- `habits`: rates, effects, products, daily rhythms and channel mix; the customer records
  and `Planner`, what a seed story asks of the planner;
- `world`: `World`, the planner (population, planning windows, responses to actions)
  and `simulate`;
- `stories`: the seed stories, in a simulated life (`plan_story`) and for the demo
  (`seed_stories`);
- `render`: planned moments as channel records, through the adapters;
- `teams`: the destinations' teams, the fate of each action and its status events;
- `writing`: `write_simulation`, `publish_simulation` and the fast JSON form.
"""

from producers.simulator.habits import (
    CURRENCY,
    DAY,
    DEFAULT_START,
    HOUR,
    MINUTE,
    PRODUCTS,
    STORIES,
    Effects,
    Rates,
)
from producers.simulator.render import EMAIL_TEMPLATES
from producers.simulator.stories import STORY_CUSTOMERS, seed_stories
from producers.simulator.teams import Team, Teams
from producers.simulator.world import simulate
from producers.simulator.writing import (
    EventPublisher,
    SimulationSummary,
    json_line,
    publish_simulation,
    write_simulation,
)

__all__ = [
    "CURRENCY",
    "DAY",
    "DEFAULT_START",
    "EMAIL_TEMPLATES",
    "HOUR",
    "MINUTE",
    "PRODUCTS",
    "STORIES",
    "STORY_CUSTOMERS",
    "Effects",
    "EventPublisher",
    "Rates",
    "SimulationSummary",
    "Team",
    "Teams",
    "json_line",
    "publish_simulation",
    "seed_stories",
    "simulate",
    "write_simulation",
]
