"""The demo's catalogue: the workloads it generates and the audit cases planted in them.

Why a module of its own: this is data - who calls which model how often, with which prompts
and token shapes - and the truth the audit tests rely on (``PLANTED``); ``llmtrace.demo`` is
the generator that turns it into call records. Most of the workload is healthy: prefixes long
enough to cache are cached the way the provider would, conversations are short, reasoning is
stationary. The cases in ``PLANTED`` are the exceptions (and their near-misses) the audit must
tell apart; each names its rule, the prompt of the workload that makes it (service, action and
model come from that workload, so the two cannot disagree), what the audit must conclude, and
why.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- what the audit must conclude ---------------------------------------------------------------

FINDING = "finding"
NO_FINDING = "no finding"
INCONCLUSIVE = "inconclusive"  # LT101: too few labels to bound the accuracy gain
UNVERIFIED = "unverified"  # LT101: reasoning rose and there are no labels at all


@dataclass(frozen=True)
class Planted:
    """One planted audit case: the rule, the key it is about, and what the audit must say."""

    rule: str
    service: str
    action: str
    prompt: str
    model: str
    expected: str
    why: str


# -- workload specs -------------------------------------------------------------------------------

LogNormal = tuple[float, float]  # (median, sigma of the log)


@dataclass(frozen=True)
class Step:
    """One LLM call a unit of work makes (per turn): prompt, model, token shapes, caching.

    ``context``: ``single`` (system prompt + one message), ``replay`` (each turn resends the
    whole history: input grows by the previous output and the new user text) or ``flat`` (a
    rolling summary of ``state_tokens`` keeps the input constant). ``cache``: ``none``,
    ``openai`` (automatic), ``anthropic`` (breakpoints; ``system_ttl_s`` for the system block)
    or ``google`` (implicit). ``reasoning_growth`` multiplies reasoning tokens after the switch,
    where ``effort`` changes from its first to its second value. ``shared_inputs``: a single
    call's user message is one of this many fixed requests (an FAQ), so identical inputs recur
    across users (0: every input is unique).
    """

    prompt_name: str
    prompt_version: str
    provider: str
    model: str
    system_tokens: int
    user_tokens: LogNormal
    output_tokens: LogNormal
    reasoning_tokens: LogNormal | None = None
    reasoning_growth: float = 1.0
    effort: tuple[str, str] | None = None
    cache: str = "none"
    system_ttl_s: float = 300.0
    context: str = "single"
    state_tokens: LogNormal | None = None
    labelled: float = 0.0
    accuracy: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.01
    shared_inputs: int = 0

    @property
    def prompt(self) -> str:
        return f"{self.prompt_name}@{self.prompt_version}"


@dataclass(frozen=True)
class Workload:
    """A service's action: how units of work arrive and which calls each one makes.

    Arrivals are either diurnal (``per_day`` units a day on average, peaking at ``peak_utc``,
    quieter at weekends) or a steady stream (one unit every ``gap_s`` seconds during
    ``active_hours`` UTC). A unit has ``turns`` turns ``turn_gap_s`` apart; each turn makes one
    call per step. ``trace_per_turn``: a chat turn is its own trace (request); otherwise the
    whole unit is one trace (an agent session, a contract review).
    """

    service: str
    action: str
    steps: tuple[Step, ...]
    per_day: float = 0.0
    gap_s: tuple[float, float] | None = None
    active_hours: tuple[int, int] = (0, 24)
    turns: tuple[int, int] = (1, 1)
    turn_gap_s: tuple[float, float] = (20.0, 120.0)
    trace_per_turn: bool = True
    peak_utc: float = 15.0
    users: int = 2000


def _s(name: str, version: str, provider: str, model: str, system: int, **kw) -> Step:
    return Step(name, version, provider, model, system, **kw)


# fmt: off
def _ab_split(
    service: str,
    action: str,
    peak_utc: float,
    prompt: tuple[str, str, str, int],
    arms: tuple[tuple[str, float, float, float], ...],
    **shape,
) -> tuple[Workload, ...]:
    """One prompt (name, version, provider, system tokens) served by several models: a workload
    per arm (model, units per day, share labelled, accuracy), the token shapes shared."""
    name, version, provider, system = prompt
    return tuple(
        Workload(service, action, per_day=per_day, peak_utc=peak_utc, steps=(
            _s(name, version, provider, model, system, labelled=labelled,
               accuracy=(accuracy, accuracy), **shape),))
        for model, per_day, labelled, accuracy in arms
    )


def _rightsizing_workloads() -> tuple[Workload, ...]:
    """LT401: one prompt served by two models (an A/B split), accuracy labelled.

    Same service, action and prompt on two workloads, one per model; labels are exact per week
    (``_with_accuracy``), so the accuracy difference is what the spec says.
    """
    return (
        *_ab_split("support-bot", "route-intent", 14, ("intent-router", "v3", "openai", 900),
                   (("gpt-4o", 300, 1.0, 0.95), ("gpt-4o-mini", 150, 1.0, 0.95)),
                   user_tokens=(1500, 0.4), output_tokens=(12, 0.3)),
        *_ab_split("legal-api", "classify-clause", 13,
                   ("clause-classifier", "v2", "anthropic", 700),
                   (("claude-sonnet-4-5", 60, 1.0, 0.92), ("claude-haiku-4-5", 60, 1.0, 0.80)),
                   user_tokens=(2500, 0.4), output_tokens=(20, 0.3)),
        *_ab_split("docs-search", "summarize-email", 16, ("email-summary", "v1", "openai", 600),
                   (("gpt-4o", 60, 0.03, 0.90), ("gpt-4o-mini", 30, 0.05, 0.90)),
                   user_tokens=(3000, 0.4), output_tokens=(300, 0.4)),
    )


def _batch_workloads() -> tuple[Workload, ...]:
    """LT501: a nightly job nobody waits for, and a daily burst of real conversations."""
    return (
        Workload("catalog-etl", "enrich-products", gap_s=(10.0, 14.0), active_hours=(2, 3),
                 steps=(
            _s("product-enricher", "v1", "openai", "gpt-4o", 700, user_tokens=(1800, 0.4),
               output_tokens=(400, 0.4)),)),
        Workload("team-assistant", "standup", gap_s=(120.0, 240.0), active_hours=(9, 10),
                 turns=(3, 6), steps=(
            _s("standup-bot", "v2", "openai", "gpt-4o", 700, user_tokens=(200, 0.5),
               output_tokens=(250, 0.4), context="replay"),)),
    )


def _duplicate_workloads() -> tuple[Workload, ...]:
    """LT502: an FAQ bot answering the same questions for many users, and a request that
    repeats too rarely to cache."""
    return (
        Workload("docs-search", "faq", per_day=200, peak_utc=16, steps=(
            _s("faq-answer", "v3", "openai", "gpt-4o", 800, user_tokens=(60, 0.3),
               output_tokens=(250, 0.3), shared_inputs=40),)),
        Workload("docs-search", "daily-brief", gap_s=(8400.0, 9600.0), steps=(
            _s("daily-brief", "v1", "openai", "gpt-4o", 800, user_tokens=(3000, 0.2),
               output_tokens=(500, 0.3), shared_inputs=1),)),
    )
# fmt: on


# Calls per day at scale 1: about 7,700, i.e. ~108k over 14 days. Token shapes are
# (median, sigma) of lognormals; "system" is the system prompt's token count.
# fmt: off
WORKLOADS: tuple[Workload, ...] = (
    # ---- healthy background ----
    Workload("support-bot", "ticket-triage", per_day=600, peak_utc=14, steps=(
        _s("ticket-triage", "v4", "openai", "gpt-4o-mini", 1450, user_tokens=(700, 0.6),
           output_tokens=(60, 0.4), cache="openai", labelled=0.10, accuracy=(0.93, 0.93)),)),
    Workload("support-bot", "answer-question", per_day=150, turns=(2, 6), peak_utc=14, steps=(
        _s("support-answer", "v7", "anthropic", "claude-haiku-4-5", 5200, user_tokens=(120, 0.7),
           output_tokens=(280, 0.5), cache="anthropic", system_ttl_s=3600.0, context="replay",
           labelled=0.05, accuracy=(0.88, 0.88)),)),
    Workload("docs-search", "search-summary", per_day=300, peak_utc=16, steps=(
        _s("search-summary", "v3", "google", "gemini-2.5-flash", 850, user_tokens=(3500, 0.4),
           output_tokens=(300, 0.4), cache="google"),)),
    Workload("legal-api", "contract-review", per_day=560, peak_utc=13, steps=(
        _s("contract-summary", "v2", "anthropic", "claude-sonnet-4-5", 2400,
           user_tokens=(10000, 0.35), output_tokens=(600, 0.35), cache="anthropic",
           system_ttl_s=3600.0),
        # LT101 positive (see PLANTED)
        _s("clause-risk", "v5", "openai", "o3", 1800, user_tokens=(10000, 0.35),
           output_tokens=(500, 0.35), reasoning_tokens=(2600, 0.45), reasoning_growth=1.8,
           effort=("medium", "high"), cache="openai", labelled=0.80, accuracy=(0.86, 0.86)),
    )),
    Workload("coding-agent", "agent-session", per_day=60, turns=(2, 6), turn_gap_s=(15.0, 45.0),
             trace_per_turn=False, peak_utc=17, users=300, steps=(
        _s("code-agent", "v12", "anthropic", "claude-sonnet-4-5", 3800, user_tokens=(900, 0.8),
           output_tokens=(350, 0.6), reasoning_tokens=(900, 0.6), effort=("medium", "medium"),
           cache="anthropic", system_ttl_s=3600.0, context="replay"),)),
    # ---- LT101 near-misses ----
    Workload("support-bot", "refund-decision", per_day=220, peak_utc=14, steps=(
        _s("refund-policy", "v6", "openai", "o4-mini", 2200, user_tokens=(600, 0.5),
           output_tokens=(90, 0.4), reasoning_tokens=(700, 0.5), reasoning_growth=1.8,
           effort=("medium", "high"), cache="openai", labelled=0.70, accuracy=(0.78, 0.86)),)),
    Workload("coding-agent", "code-review", per_day=200, peak_utc=17, users=300, steps=(
        _s("pr-reviewer", "v4", "anthropic", "claude-sonnet-4-5", 2600, user_tokens=(5000, 0.6),
           output_tokens=(450, 0.5), reasoning_tokens=(1500, 0.5), reasoning_growth=1.8,
           effort=("medium", "high"), cache="anthropic", system_ttl_s=3600.0,
           labelled=40 / (200 * 7), accuracy=(0.80, 0.80)),)),
    Workload("coding-agent", "write-tests", per_day=150, peak_utc=17, users=300, steps=(
        _s("test-writer", "v2", "openai", "o4-mini", 1300, user_tokens=(2500, 0.5),
           output_tokens=(700, 0.5), reasoning_tokens=(1200, 0.5), reasoning_growth=1.8,
           effort=("medium", "high"), cache="openai"),)),
    # ---- LT201 positive and near-misses ----
    Workload("legal-api", "clause-extraction", gap_s=(20.0, 60.0), active_hours=(6, 22), steps=(
        _s("playbook-qa", "v2", "anthropic", "claude-sonnet-4-5", 6800, user_tokens=(900, 0.5),
           output_tokens=(350, 0.5)),)),
    Workload("legal-api", "portfolio-digest", gap_s=(6000.0, 8400.0), steps=(
        _s("portfolio-digest", "v1", "anthropic", "claude-sonnet-4-5", 7200,
           user_tokens=(4000, 0.4), output_tokens=(900, 0.4)),)),
    Workload("docs-search", "answer-question", per_day=350, peak_utc=16, steps=(
        _s("docs-answer", "v9", "anthropic", "claude-sonnet-4-5", 8200, user_tokens=(900, 0.4),
           output_tokens=(350, 0.4), cache="anthropic", system_ttl_s=3600.0, labelled=0.08,
           accuracy=(0.84, 0.84)),)),
    Workload("docs-search", "query-rewrite", per_day=500, peak_utc=16, steps=(
        _s("query-rewrite", "v2", "anthropic", "claude-sonnet-4-5", 650, user_tokens=(60, 0.5),
           output_tokens=(40, 0.4)),)),
    # ---- LT301 positive and near-miss ----
    Workload("support-bot", "troubleshoot-session", per_day=25, turns=(10, 30), peak_utc=14,
             steps=(
        _s("troubleshooter", "v3", "openai", "gpt-4o", 1200, user_tokens=(550, 0.6),
           output_tokens=(120, 0.4), cache="openai", context="replay"),)),
    Workload("support-bot", "account-assistant", per_day=12, turns=(10, 30), peak_utc=14,
             steps=(
        _s("account-assistant", "v5", "openai", "gpt-4o-mini", 2000, user_tokens=(80, 0.5),
           output_tokens=(220, 0.4), cache="openai", context="flat",
           state_tokens=(4800, 0.1)),)),
    *_rightsizing_workloads(),
    *_batch_workloads(),
    *_duplicate_workloads(),
)
# fmt: on


def _history_workloads() -> tuple[Workload, ...]:
    """LT202 and LT203 cases: a chat that resends its history uncached, and a prompt that pays
    the cache-write premium for a prefix nobody reads, each with a near-miss."""
    # fmt: off
    return (
        # LT202 positive: a help-desk chat, 3-8 turns a minute or two apart, whole history
        # resent, no cache_control anywhere (system prompt below the 1,024 minimum: not LT201's)
        Workload("support-bot", "helpdesk-chat", per_day=90, turns=(3, 8),
                 turn_gap_s=(25.0, 150.0), peak_utc=15, steps=(
            _s("helpdesk-chat", "v2", "anthropic", "claude-sonnet-4-5", 700,
               user_tokens=(380, 0.5), output_tokens=(420, 0.4), context="replay"),)),
        # LT202 near-miss: the same shape on Haiku 4.5, whose prompts stay below its
        # 4,096-token minimum: nothing could be cached
        Workload("support-bot", "faq-chat", per_day=40, turns=(2, 5), turn_gap_s=(20.0, 90.0),
                 peak_utc=15, steps=(
            _s("faq-chat", "v1", "anthropic", "claude-haiku-4-5", 600, user_tokens=(150, 0.4),
               output_tokens=(200, 0.4), context="replay"),)),
        # LT203 positive: a 12k-token prefix written with the 1-hour TTL (2x input) every
        # 65-110 minutes: every entry expires unread
        Workload("legal-api", "risk-brief", gap_s=(3900.0, 6600.0), steps=(
            _s("risk-brief", "v3", "anthropic", "claude-sonnet-4-5", 12000,
               user_tokens=(1500, 0.4), output_tokens=(600, 0.4), cache="anthropic",
               system_ttl_s=3600.0),)),
        # LT203 near-miss: 5-minute writes of a 3,000-token prefix read 1-4 minutes later
        Workload("legal-api", "clause-lookup", gap_s=(60.0, 240.0), active_hours=(9, 17),
                 steps=(
            _s("clause-lookup", "v1", "anthropic", "claude-sonnet-4-5", 3000,
               user_tokens=(300, 0.4), output_tokens=(150, 0.4), cache="anthropic",
               system_ttl_s=300.0),)),
    )
    # fmt: on


WORKLOADS = (*WORKLOADS, *_history_workloads())


# -- the planted cases ------------------------------------------------------------------------------

# (rule, prompt, expected, why); the first workload step with that prompt gives the rest of
# the key. In the order of the rules' codes within each group, as the audit lists them.
# fmt: off
_CASES: list[tuple[str, str, str, str]] = [
    ("LT101", "clause-risk@v5", FINDING,
        "effort medium->high in the last 7 days: reasoning/call x1.8, accuracy 0.86 both "
        "weeks on ~3,100 labelled calls/week (Newcombe 95% upper bound ~+1.5 pp < 2 pp)"),
    ("LT101", "refund-policy@v6", NO_FINDING,
        "effort medium->high: reasoning x1.8 but accuracy rose 0.78->0.86 on ~1,070 "
        "labelled calls/week, so the extra thinking pays"),
    ("LT101", "pr-reviewer@v4", INCONCLUSIVE,
        "thinking budget medium->high: reasoning x1.8, accuracy flat (0.80) but only ~40 "
        "labelled calls/week: the gain cannot be bounded below 2 pp"),
    ("LT101", "test-writer@v2", UNVERIFIED,
        "effort medium->high: reasoning x1.8 with no accuracy labels at all"),
    ("LT201", "playbook-qa@v2", FINDING,
        "6,800-token system prompt (one prefix hash) sent every 20-60 s, 06-22 UTC daily, "
        "with zero cache reads and writes"),
    ("LT201", "portfolio-digest@v1", NO_FINDING,
        "7,200-token prefix, uncached, but reused only every ~2 h (100-140 min): beyond the"
        " 5-min and 1-h TTLs, so every call would be a write"),
    ("LT201", "docs-answer@v9", NO_FINDING,
        "8,200-token prefix already cached (1-h TTL): cache reads ~90% of input tokens"),
    ("LT201", "query-rewrite@v2", NO_FINDING,
        "650-token prefix sent every minute or two, uncached: below Sonnet 4.5's "
        "1,024-token minimum, so it cannot be cached"),
    ("LT301", "troubleshooter@v3", FINDING,
        "10-30-turn conversations replaying the whole history: input grows each turn by the"
        " previous output + the new user text (~670 tokens/turn), output ~120 tokens"),
    ("LT301", "account-assistant@v5", NO_FINDING,
        "10-30-turn conversations with a rolling summary: input ~7k tokens but flat per "
        "turn"),
    ("LT401", "intent-router@v3", FINDING,
        "A/B split gpt-4o (2/3) vs gpt-4o-mini (1/3), both 95% accurate on every call "
        "labelled: the Newcombe bound of the difference is within 2 pp"),
    ("LT401", "clause-classifier@v2", NO_FINDING,
        "split Sonnet 4.5 / Haiku 4.5, all labelled, but Haiku is 12 pp less accurate (0.92"
        " vs 0.80): no switch"),
    ("LT401", "email-summary@v1", INCONCLUSIVE,
        "split gpt-4o / gpt-4o-mini, equal accuracy but only ~3% of calls labelled (about "
        "10 per model a week): inconclusive, names the labels needed"),
    ("LT501", "product-enricher@v1", FINDING,
        "a nightly job: single calls every 10-14 s between 02:00 and 03:00 UTC, no "
        "conversation, at standard rates to OpenAI (Batch API at half price)"),
    ("LT501", "standup-bot@v2", NO_FINDING,
        "a burst at 09:00 UTC every day, but people chat with it (3-6-turn conversations): "
        "interactive"),
    ("LT502", "faq-answer@v3", FINDING,
        "40 popular questions asked by different users all day: the same request comes back"
        " from another session within minutes"),
    ("LT502", "daily-brief@v1", NO_FINDING,
        "one identical request, but every ~2.5 h: beyond the 60-minute cache window"),
    ("LT202", "helpdesk-chat@v2", FINDING,
        "3-8-turn chats, turns 25-150 s apart, resending the whole history (~800 "
        "tokens/turn) with no caching: a breakpoint on the last message reads it"),
    ("LT202", "faq-chat@v1", NO_FINDING,
        "uncached history, but every prompt is below Haiku 4.5's 4,096-token minimum"),
    ("LT203", "risk-brief@v3", FINDING,
        "12,000-token prefix written with the 1-hour TTL every 65-110 min: never read, the "
        "2x write premium is wasted"),
    ("LT203", "clause-lookup@v1", NO_FINDING,
        "5-minute writes of a 3,000-token prefix, read by the next call 1-4 min later"),
]
# fmt: on


def _planted(rule: str, prompt: str, expected: str, why: str) -> Planted:
    for workload in WORKLOADS:
        for step in workload.steps:
            if step.prompt == prompt:
                return Planted(rule, workload.service, workload.action, prompt, step.model,
                               expected, why)  # fmt: skip
    raise ValueError(f"planted case {rule} names {prompt}, which no workload sends")


PLANTED: list[Planted] = [_planted(*case) for case in _CASES]
