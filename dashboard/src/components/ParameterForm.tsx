// The trading-parameter form, generated from `parameter_schema` (JSON Schema with $defs): one input per field,
// grouped by section, prefilled with the values in force; a diff of what changed; PUT /api/v1/parameters with
// only the changed fields. Bounds are shown as hints; the server decides (its error names the field).
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { ApiError, errorMessage, type Schemas } from "../api/client";
import { useSetParameters } from "../api/queries";
import { fmtTime, fmtValue } from "../format";
import {
  boundsText,
  buildSections,
  diffDrafts,
  fromDraft,
  getPath,
  toDraft,
  withinBounds,
  type Draft,
  type JsonSchema,
  type ParamField,
} from "../paramSchema";

type ParametersOut = Schemas["ParametersOut"];

function initialDrafts(fields: ParamField[], values: unknown): Record<string, Draft> {
  const drafts: Record<string, Draft> = {};
  for (const field of fields) drafts[field.path] = toDraft(field, getPath(values, field.path));
  return drafts;
}

/** "changes.limits.max_position" or "limits.max_position" -> "limits.max_position". */
function normalizeField(field: string | null): string | null {
  if (!field) return null;
  return field.startsWith("changes.") ? field.slice("changes.".length) : field;
}

function FieldInput({
  field,
  draft,
  current,
  defaultValue,
  disabled,
  invalid,
  onChange,
}: {
  field: ParamField;
  draft: Draft;
  current: unknown;
  defaultValue: unknown;
  disabled: boolean;
  invalid: boolean;
  onChange: (draft: Draft) => void;
}) {
  const id = `param-${field.path}`;
  const bounds = boundsText(field);
  const value = fromDraft(field, draft);
  const outside = typeof value === "number" && !withinBounds(field, value);
  const changed = !Object.is(value, current) && value !== current;
  const showDefault = defaultValue !== undefined && defaultValue !== current;
  let input;
  if (field.kind === "boolean") {
    input = (
      <input
        id={id}
        type="checkbox"
        checked={draft === true}
        disabled={disabled}
        onChange={(event) => onChange(event.target.checked)}
        data-testid={id}
        aria-invalid={invalid || undefined}
        className={invalid ? "invalid" : undefined}
      />
    );
  } else if (field.kind === "enum") {
    input = (
      <select
        id={id}
        value={String(draft)}
        disabled={disabled}
        onChange={(event) => onChange(event.target.value)}
        data-testid={id}
        aria-invalid={invalid || undefined}
        className={invalid ? "invalid" : undefined}
      >
        {field.options.map((option) => (
          <option key={String(option)} value={String(option)}>
            {String(option)}
          </option>
        ))}
      </select>
    );
  } else {
    const numeric = field.kind === "number" || field.kind === "integer";
    input = (
      <input
        id={id}
        type={numeric ? "number" : "text"}
        inputMode={numeric ? "decimal" : undefined}
        step={numeric ? (field.step ?? "any") : undefined}
        min={numeric && field.minimum !== null ? field.minimum : undefined}
        max={numeric && field.maximum !== null ? field.maximum : undefined}
        value={String(draft)}
        disabled={disabled}
        onChange={(event) => onChange(event.target.value)}
        data-testid={id}
        aria-invalid={invalid || undefined}
        aria-describedby={`${id}-help`}
        className={`${invalid ? "invalid" : ""} ${outside ? "outside" : ""}`.trim() || undefined}
      />
    );
  }
  return (
    <div className={`param ${changed ? "param-changed" : ""} ${invalid ? "param-invalid" : ""}`}>
      <label htmlFor={id} className="param-label">
        {field.title}
        <span className="mono muted small"> {field.path}</span>
      </label>
      <div className="param-input">{input}</div>
      <div className="param-help small" id={`${id}-help`}>
        {bounds && (
          <span className={outside ? "text-warn" : "muted"} data-testid={`${id}-bounds`}>
            {bounds}
            {outside ? " — outside the bounds: the server will refuse it" : ""}
          </span>
        )}
        {showDefault && (
          <span className="muted" data-testid={`${id}-default`}>
            {" "}
            · default {fmtValue(defaultValue)}
          </span>
        )}
        {field.description && <div className="muted">{field.description}</div>}
      </div>
    </div>
  );
}

export function ParameterForm({ parameters, canOperate }: { parameters: ParametersOut; canOperate: boolean }) {
  const schema = parameters.parameter_schema as JsonSchema;
  const sections = useMemo(() => buildSections(schema), [schema]);
  const fields = useMemo(() => sections.flatMap((section) => section.fields), [sections]);
  const save = useSetParameters();

  // the edit's base: the values and version the drafts started from (sent back as `version`)
  const [base, setBase] = useState(() => ({ version: parameters.version, values: parameters.values }));
  const [drafts, setDrafts] = useState<Record<string, Draft>>(() => initialDrafts(fields, parameters.values));
  const [reason, setReason] = useState("");
  const [saved, setSaved] = useState<Schemas["ParametersChangedOut"] | null>(null);

  const changes = useMemo(() => diffDrafts(fields, base.values, drafts), [fields, base.values, drafts]);
  const dirty = changes.length > 0;
  const newerOnServer = parameters.version > base.version;

  // newer parameters on the server (another operator, or a market switch): follow them unless mid-edit
  // (versions only grow: an older prop, e.g. just before our own save lands in the cache, is ignored)
  useEffect(() => {
    if (parameters.version > base.version && !dirty) {
      setBase({ version: parameters.version, values: parameters.values });
      setDrafts(initialDrafts(fields, parameters.values));
    }
  }, [parameters.version, parameters.values, base.version, dirty, fields]);

  const error = save.error;
  const errorField = error instanceof ApiError ? normalizeField(error.field) : null;

  function reload() {
    setBase({ version: parameters.version, values: parameters.values });
    setDrafts(initialDrafts(fields, parameters.values));
    save.reset();
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    if (!dirty || !canOperate) return;
    const body: Schemas["ParametersIn"] = {
      changes: Object.fromEntries(changes.map((change) => [change.path, change.new])),
      reason,
      version: base.version,
    };
    setSaved(null);
    save.mutate(body, {
      onSuccess: (result) => {
        setSaved(result);
        setReason("");
        setBase({ version: result.parameters.version, values: result.parameters.values });
        setDrafts(initialDrafts(fields, result.parameters.values));
      },
    });
  }

  const disabled = !canOperate || save.isPending;

  return (
    <form className="param-form" onSubmit={submit} noValidate data-testid="param-form">
      <p className="muted small">
        Version {parameters.version}
        {parameters.updated_at
          ? ` · changed ${fmtTime(parameters.updated_at)} by ${parameters.updated_by ?? "?"}${parameters.reason ? ` (“${parameters.reason}”)` : ""}`
          : " · as configured"}
      </p>
      {newerOnServer && dirty && (
        <div className="alert alert-warn" data-testid="param-stale">
          The parameters changed on the server (version {parameters.version}) while you were editing version {base.version}.{" "}
          <button type="button" className="btn btn-small" onClick={reload}>
            Discard my edits and reload
          </button>
        </div>
      )}
      <div className="param-sections">
        {sections.map((section) => (
          <fieldset key={section.key} className="param-section" data-testid={`param-section-${section.key}`}>
            <legend>
              {section.title} <span className="mono muted small">{section.key}</span>
            </legend>
            {section.description && <p className="muted small">{section.description}</p>}
            {section.fields.map((field) => (
              <FieldInput
                key={field.path}
                field={field}
                draft={drafts[field.path] ?? toDraft(field, getPath(base.values, field.path))}
                current={getPath(base.values, field.path)}
                defaultValue={getPath(parameters.defaults, field.path)}
                disabled={disabled}
                invalid={errorField === field.path}
                onChange={(draft) => {
                  setSaved(null);
                  setDrafts((current) => ({ ...current, [field.path]: draft }));
                }}
              />
            ))}
          </fieldset>
        ))}
      </div>

      <div className="param-diff" data-testid="param-diff" aria-live="polite">
        <h4>Changes</h4>
        {dirty ? (
          <ul>
            {changes.map((change) => (
              <li key={change.path} data-testid="param-diff-item" className="mono">
                {change.path}: {fmtValue(change.old)} → {fmtValue(change.new)}
              </li>
            ))}
          </ul>
        ) : (
          <p className="muted">No changes.</p>
        )}
      </div>

      <div className="param-actions">
        <label className="field grow">
          <span>Reason (recorded in the ledger)</span>
          <input
            type="text"
            value={reason}
            onChange={(event) => setReason(event.target.value)}
            disabled={disabled}
            maxLength={1000}
            placeholder="Why this change?"
            data-testid="param-reason"
            aria-invalid={errorField === "reason" || undefined}
            className={errorField === "reason" ? "invalid" : undefined}
          />
        </label>
        <button type="submit" className="btn btn-primary" disabled={!dirty || disabled} data-testid="param-apply">
          {save.isPending ? "Applying…" : `Apply ${dirty ? `${changes.length} change${changes.length > 1 ? "s" : ""}` : ""}`.trim()}
        </button>
        <button type="button" className="btn btn-ghost" onClick={reload} disabled={!dirty || save.isPending} data-testid="param-reset">
          Reset
        </button>
      </div>

      {error ? (
        <div className="alert alert-bad" role="alert" data-testid="param-error" data-field={errorField ?? ""}>
          {errorField && !errorMessage(error).startsWith(errorField) ? (
            <>
              <b className="mono">{errorField}</b>:{" "}
            </>
          ) : null}
          {errorMessage(error)}
          {error instanceof ApiError && error.status === 409 ? (
            <>
              {" "}
              <button type="button" className="btn btn-small" onClick={reload}>
                Reload
              </button>
            </>
          ) : null}
        </div>
      ) : null}
      {saved ? (
        <div className="alert alert-ok" role="status" data-testid="param-saved">
          Saved{saved.ledger_seq !== null ? ` · ledger seq ${saved.ledger_seq}` : " · nothing changed"} · version {saved.parameters.version}
          {saved.changes.length > 0 && (
            <ul>
              {saved.changes.map((change) => (
                <li key={change.field} className="mono">
                  {change.field}: {fmtValue(change.old)} → {fmtValue(change.new)}
                </li>
              ))}
            </ul>
          )}
        </div>
      ) : null}
    </form>
  );
}
