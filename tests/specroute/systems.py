"""The whole system on the tiny zoo, for the integration tests that need a real local Ray cluster."""

from __future__ import annotations


def start_tiny_system(built_zoo, drafters: tuple[str, ...], drafter_updates: dict | None = None,
                      drafter_options: dict | None = None, ready_timeout_s: float = 600.0, **overrides):
    """`LocalSystem` serving the tiny zoo with only `drafters` deployed (the routing default among
    them), and `plain` (no drafting; where the zoo's table routes when no drafter is faster), on
    free ports. overrides: config sections (as for `config_for_zoo`); drafter_updates:
    {drafter name: fields to replace in its settings}; drafter_options: {drafter name: options to
    add to its kind's options}."""
    from specroute.config import DrafterSettings
    from specroute.zoo.serving import local_config_for_zoo
    from specroute.serve import LocalSystem
    config = local_config_for_zoo(built_zoo, **overrides)
    updates = {name: dict(fields) for name, fields in (drafter_updates or {}).items()}
    for name, options in (drafter_options or {}).items():
        base = next(d.options for d in config.drafters if d.name == name)
        updates.setdefault(name, {})["options"] = {**base, **options}
    chosen = [d.model_copy(update=updates.get(d.name, {})) for d in config.drafters
              if d.name in drafters and d.kind != "plain"]
    chosen.append(DrafterSettings(name="plain", kind="plain"))
    return LocalSystem.start(config.model_copy(update={"drafters": chosen}), num_cpus=8,
                             ready_timeout_s=ready_timeout_s)



def served_drafters(drafters: tuple[str, ...]) -> set[str]:
    """What `start_tiny_system(built_zoo, drafters)` deploys."""
    return {*drafters, "plain"}
