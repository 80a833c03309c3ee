"""Prefect flows: thin wiring of CTA's stages. Nothing here decides anything."""
