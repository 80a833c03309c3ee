"""Deployment tooling: container images (`deploy.images`), the Compose override for tests (`compose.host.yaml`)."""
