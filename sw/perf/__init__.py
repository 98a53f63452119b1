"""Performance model: HBM3-PIM command timing (:mod:`.hbm3`), the compared systems
(:mod:`.systems`) and ``aqpim bench perf`` (:mod:`.cli`). See docs/perf.md."""
