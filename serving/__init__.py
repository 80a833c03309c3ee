"""Serving: the worker that trades the champion, brokers, risk, persistence (built in the serving issue)."""
