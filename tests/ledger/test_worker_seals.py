"""The trading worker signs the ledger's checkpoints itself (between candles, and once when it stops) and
publishes them to the anchors, so a paper session ends with its whole ledger under a signed, anchored root."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.serve import serve
from cta.checkpoints import Signer
from serving import ledger
from serving.db import make_engine, session_factory
from serving.ledger_anchor import FileAnchors, audit, newest_anchor
from serving.ledger_log import latest_checkpoint, log_verifiers, signer_from_secret
from tests.exchange_fixtures import running_exchange
from tests.serving.test_serve import register_champion, settings_for

pytestmark = pytest.mark.integration


def test_a_paper_session_ends_with_its_ledger_signed_and_anchored(tmp_path: Path) -> None:
    _, key = Signer.generate("cta.test/ledger")
    anchors = tmp_path / "anchors"
    with running_exchange(speed=36_000.0) as exchange:
        settings = settings_for(
            tmp_path,
            exchange.url,
            env={"CTA_LEDGER_SIGNING_KEY": key},
            ledger={"origin": "cta.test/ledger", "anchor_dir": str(anchors), "checkpoint_every_entries": 2},
        )
        register_champion(settings, 1.0)
        rows = asyncio.run(serve(settings))
    assert rows[0]["orders"] == 1
    sessions = session_factory(make_engine(settings.serving.database_url))
    with sessions() as session:
        size = ledger.tree_size(session)
        last = latest_checkpoint(session)
        assert last is not None and last.size == size > 0  # the stop sealed everything the session wrote
        store = FileAnchors(anchors)
        newest = newest_anchor(store)
        assert newest is not None and newest[0] == size
        keys = log_verifiers(settings.ledger, signer_from_secret(settings.secrets))
        result = audit(session, [store], keys, settings.ledger.origin)
        assert result.ok, result
