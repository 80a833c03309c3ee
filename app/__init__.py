"""The application layer: the `cta` command line and the composition roots that assemble settings,
stores, brokers and servers into running processes (the worker runtime, the Prefect server, the demo).
It may import everything below it (flows, the stages, core); nothing below imports it."""
