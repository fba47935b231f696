"""Operations: metrics, benchmarks, dashboards and alert rules."""
