// Ledger: the hash chain's verification and its entries, newest first, filtered by kind.
import { useState } from "react";
import type { Schemas } from "../api/client";
import { useLedger, useLedgerVerify } from "../api/queries";
import { Table, type Column } from "../components/Table";
import { Pager, Panel, QueryState } from "../components/ui";
import { compactJson, fmtTime, shortHash } from "../format";
import { useDebounced, useKeyset } from "../hooks";

type Entry = Schemas["LedgerEntryOut"];

const KNOWN_KINDS = ["decision", "order", "fill", "cancelled", "control", "parameters", "reconcile", "breach", "demotion"];

function VerifyBanner() {
  const verify = useLedgerVerify();
  if (verify.isPending) {
    return (
      <div className="alert alert-muted" data-testid="ledger-status" data-ok="pending">
        Verifying the ledger…
      </div>
    );
  }
  if (verify.error || !verify.data) {
    return (
      <div className="alert alert-warn" data-testid="ledger-status" data-ok="unknown">
        Could not verify the ledger: {verify.error instanceof Error ? verify.error.message : "no answer"}
      </div>
    );
  }
  const v = verify.data;
  return v.ok ? (
    <div className="alert alert-ok" data-testid="ledger-status" data-ok="true">
      ✓ Ledger verified: {v.entries.toLocaleString("en-US")} entries, hash chain intact
      {v.checkpoint_size !== null ? ` · checkpoint of ${v.checkpoint_size.toLocaleString("en-US")} entries at ${fmtTime(v.checkpoint_time)}` : ""}
    </div>
  ) : (
    <div className="alert alert-bad" data-testid="ledger-status" data-ok="false">
      ✗ Ledger NOT verified: {v.problem ?? "unknown problem"} ({v.entries.toLocaleString("en-US")} entries)
    </div>
  );
}

export function Ledger() {
  const [kind, setKind] = useState("");
  const [open, setOpen] = useState<Set<number>>(new Set());
  const filter = useDebounced(kind.trim(), 300);
  const pager = useKeyset(filter);
  const ledger = useLedger(filter || null, pager.before);
  const page = ledger.data;

  const toggle = (entry: Entry) =>
    setOpen((current) => {
      const next = new Set(current);
      if (next.has(entry.seq)) next.delete(entry.seq);
      else next.add(entry.seq);
      return next;
    });

  const columns: Column<Entry>[] = [
    { key: "seq", header: "Seq", align: "right", mono: true, render: (e) => e.seq },
    { key: "time", header: "Time", render: (e) => fmtTime(e.time, { seconds: true }), className: "nowrap" },
    { key: "kind", header: "Kind", render: (e) => <span className="tag">{e.kind}</span> },
    { key: "hash", header: "Hash", mono: true, render: (e) => <span title={e.hash}>{shortHash(e.hash, 12)}</span> },
    {
      key: "payload",
      header: "Payload",
      mono: true,
      className: "payload",
      // the whole compact JSON (CSS cuts it to the column's width; it stays searchable), expandable below
      render: (e) => (open.has(e.seq) ? <span className="muted">(expanded below)</span> : <span className="payload-text">{compactJson(e.payload, 4000)}</span>),
    },
  ];

  return (
    <div className="page">
      <div className="page-head">
        <h1>Ledger</h1>
        <div className="filters">
          <label className="field-inline">
            <span>Kind</span>
            <input
              list="ledger-kinds"
              value={kind}
              onChange={(event) => setKind(event.target.value)}
              placeholder="any kind"
              data-testid="filter-kind"
            />
            <datalist id="ledger-kinds">
              {KNOWN_KINDS.map((k) => (
                <option key={k} value={k} />
              ))}
            </datalist>
          </label>
        </div>
      </div>
      <VerifyBanner />
      <Panel>
        <QueryState query={ledger} what="Loading the ledger">
          {() =>
            page ? (
              <>
                <Table
                  columns={columns}
                  rows={page.items}
                  rowKey={(e) => e.seq}
                  testId="ledger-table"
                  rowTestId="ledger-row"
                  rowProps={(e) => ({ "data-seq": e.seq })}
                  onRowClick={toggle}
                  expanded={(e) => open.has(e.seq)}
                  renderExpanded={(e) => (
                    <div className="details" data-testid="ledger-details">
                      <dl className="dl">
                        <dt>Hash</dt>
                        <dd className="mono hash">{e.hash}</dd>
                        <dt>Previous hash</dt>
                        <dd className="mono hash">{e.prev_hash}</dd>
                      </dl>
                      <pre className="json">{JSON.stringify(e.payload, null, 2)}</pre>
                    </div>
                  )}
                  empty={filter ? `No "${filter}" entries.` : "The ledger is empty."}
                />
                <Pager
                  total={page.total}
                  shown={page.items.length}
                  page={pager.page}
                  hasNewer={pager.hasNewer}
                  hasOlder={page.next_before !== null}
                  onNewer={pager.newer}
                  onOlder={() => pager.older(page.next_before)}
                  fetching={ledger.isFetching}
                />
              </>
            ) : null
          }
        </QueryState>
      </Panel>
    </div>
  );
}
