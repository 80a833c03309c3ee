// The trading-parameter form is generated from the JSON Schema the server sends (`parameter_schema`): this turns
// the schema (with `$ref`s into `$defs`) into sections of typed fields, and compares drafts with the values.

export type JsonSchema = {
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  definitions?: Record<string, JsonSchema>;
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number | boolean;
  exclusiveMaximum?: number | boolean;
  multipleOf?: number;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  [key: string]: unknown;
};

export type FieldKind = "number" | "integer" | "boolean" | "string" | "enum";

export interface ParamField {
  /** dotted path, e.g. "limits.max_position": the key sent in `changes` */
  path: string;
  name: string;
  section: string;
  kind: FieldKind;
  title: string;
  description: string | null;
  nullable: boolean;
  minimum: number | null;
  maximum: number | null;
  exclusiveMinimum: number | null;
  exclusiveMaximum: number | null;
  step: number | null;
  options: unknown[];
  schemaDefault: unknown;
}

export interface ParamSection {
  key: string;
  title: string;
  description: string | null;
  fields: ParamField[];
}

function asRecord(value: unknown): Record<string, unknown> | null {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/** Follow a local JSON pointer ("#/$defs/Limits") inside `root`. */
export function resolvePointer(root: JsonSchema, ref: string): JsonSchema | null {
  if (!ref.startsWith("#")) return null;
  const parts = ref
    .slice(1)
    .split("/")
    .filter((part) => part !== "")
    .map((part) => decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~"));
  let node: unknown = root;
  for (const part of parts) {
    const record = asRecord(node);
    if (!record || !(part in record)) return null;
    node = record[part];
  }
  return asRecord(node) as JsonSchema | null;
}

/** A schema with its `$ref`s (and single-entry `allOf`s) resolved; sibling keywords override the target's. */
export function deref(root: JsonSchema, schema: JsonSchema, seen: Set<string> = new Set()): JsonSchema {
  let current = schema;
  for (let depth = 0; depth < 32; depth++) {
    if (typeof current.$ref === "string") {
      const ref = current.$ref;
      if (seen.has(ref)) return { ...current, $ref: undefined };
      seen.add(ref);
      const target = resolvePointer(root, ref);
      const { $ref: _ignored, ...siblings } = current;
      current = target ? { ...target, ...siblings } : siblings;
      continue;
    }
    if (Array.isArray(current.allOf) && current.allOf.length === 1 && current.allOf[0]) {
      const { allOf, ...siblings } = current;
      current = { ...deref(root, allOf[0] as JsonSchema, seen), ...siblings };
      continue;
    }
    break;
  }
  return current;
}

function typeOf(schema: JsonSchema): string[] {
  if (Array.isArray(schema.type)) return schema.type;
  if (typeof schema.type === "string") return [schema.type];
  if (schema.properties) return ["object"];
  return [];
}

/** Optional[X] (anyOf [X, null]): X and whether null is allowed. */
function unwrapNullable(root: JsonSchema, schema: JsonSchema): { schema: JsonSchema; nullable: boolean } {
  const variants = schema.anyOf ?? schema.oneOf;
  if (Array.isArray(variants)) {
    const resolved = variants.map((variant) => deref(root, variant));
    const nonNull = resolved.filter((variant) => !typeOf(variant).includes("null") || typeOf(variant).length > 1);
    if (nonNull.length === 1 && nonNull[0]) {
      const { anyOf: _a, oneOf: _o, ...rest } = schema;
      return { schema: { ...nonNull[0], ...rest }, nullable: nonNull.length < resolved.length };
    }
  }
  const types = typeOf(schema);
  if (types.includes("null") && types.length === 2) {
    return { schema: { ...schema, type: types.find((t) => t !== "null") }, nullable: true };
  }
  return { schema, nullable: false };
}

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function humanize(name: string): string {
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function makeField(root: JsonSchema, raw: JsonSchema, path: string, name: string, section: string): ParamField {
  const { schema, nullable } = unwrapNullable(root, deref(root, raw));
  const types = typeOf(schema);
  let kind: FieldKind = "string";
  if (Array.isArray(schema.enum)) kind = "enum";
  else if (types.includes("boolean")) kind = "boolean";
  else if (types.includes("integer")) kind = "integer";
  else if (types.includes("number")) kind = "number";
  // draft-4 style booleans (exclusiveMinimum: true + minimum) are mapped to the 2020-12 numeric form
  let minimum = num(schema.minimum);
  let maximum = num(schema.maximum);
  let exclusiveMinimum = num(schema.exclusiveMinimum);
  let exclusiveMaximum = num(schema.exclusiveMaximum);
  if (schema.exclusiveMinimum === true && minimum !== null) {
    exclusiveMinimum = minimum;
    minimum = null;
  }
  if (schema.exclusiveMaximum === true && maximum !== null) {
    exclusiveMaximum = maximum;
    maximum = null;
  }
  return {
    path,
    name,
    section,
    kind,
    title: typeof schema.title === "string" && schema.title ? schema.title : humanize(name),
    description: typeof schema.description === "string" ? schema.description : null,
    nullable,
    minimum,
    maximum,
    exclusiveMinimum,
    exclusiveMaximum,
    step: num(schema.multipleOf) ?? (kind === "integer" ? 1 : null),
    options: Array.isArray(schema.enum) ? schema.enum : [],
    schemaDefault: schema.default,
  };
}

function collect(root: JsonSchema, schema: JsonSchema, prefix: string, section: string, out: ParamField[]): void {
  const resolved = deref(root, schema);
  for (const [name, child] of Object.entries(resolved.properties ?? {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    const inner = unwrapNullable(root, deref(root, child)).schema;
    if (typeOf(inner).includes("object") && inner.properties) {
      collect(root, inner, path, section, out);
    } else {
      out.push(makeField(root, child, path, name, section));
    }
  }
}

/**
 * Sections of the form: one per object-valued top-level property (`limits`, `risk`), its fields flattened with
 * dotted paths; top-level scalars go in a "general" section.
 */
export function buildSections(root: JsonSchema): ParamSection[] {
  const sections: ParamSection[] = [];
  const general: ParamField[] = [];
  const top = deref(root, root);
  for (const [key, child] of Object.entries(top.properties ?? {})) {
    const resolved = unwrapNullable(root, deref(root, child)).schema;
    if (typeOf(resolved).includes("object") && resolved.properties) {
      const fields: ParamField[] = [];
      collect(root, resolved, key, key, fields);
      sections.push({
        key,
        title: typeof resolved.title === "string" && resolved.title ? resolved.title : humanize(key),
        description: typeof resolved.description === "string" ? resolved.description : null,
        fields,
      });
    } else {
      general.push(makeField(root, child, key, key, "general"));
    }
  }
  if (general.length) sections.unshift({ key: "general", title: "General", description: null, fields: general });
  return sections;
}

/** Read a dotted path in nested values. */
export function getPath(values: unknown, path: string): unknown {
  let node: unknown = values;
  for (const part of path.split(".")) {
    const record = asRecord(node);
    if (!record) return undefined;
    node = record[part];
  }
  return node;
}

/** Bounds as text: "0 < x ≤ 1", "≥ 0", "> 0". */
export function boundsText(field: ParamField): string | null {
  const low =
    field.exclusiveMinimum !== null
      ? { value: field.exclusiveMinimum, op: "<" }
      : field.minimum !== null
        ? { value: field.minimum, op: "≤" }
        : null;
  const high =
    field.exclusiveMaximum !== null
      ? { value: field.exclusiveMaximum, op: "<" }
      : field.maximum !== null
        ? { value: field.maximum, op: "≤" }
        : null;
  if (low && high) return `${low.value} ${low.op} x ${high.op} ${high.value}`;
  if (low) return `x ${low.op === "<" ? ">" : "≥"} ${low.value}`;
  if (high) return `x ${high.op} ${high.value}`;
  return null;
}

/** Is `value` inside the field's bounds? (a hint only: the server decides) */
export function withinBounds(field: ParamField, value: number): boolean {
  if (field.minimum !== null && value < field.minimum) return false;
  if (field.exclusiveMinimum !== null && value <= field.exclusiveMinimum) return false;
  if (field.maximum !== null && value > field.maximum) return false;
  if (field.exclusiveMaximum !== null && value >= field.exclusiveMaximum) return false;
  if (field.kind === "integer" && !Number.isInteger(value)) return false;
  return true;
}

/** A draft as the user left it: text for number/string inputs, a boolean for checkboxes. */
export type Draft = string | boolean;

/** The initial draft of a field from its value in force. */
export function toDraft(field: ParamField, value: unknown): Draft {
  if (field.kind === "boolean") return value === true;
  if (value === null || value === undefined) return "";
  return String(value);
}

/**
 * The value a draft sends. Numbers are sent as numbers when they parse; anything else is sent as typed (the
 * server refuses it naming the field: the bounds and types are the server's to decide).
 */
export function fromDraft(field: ParamField, draft: Draft): unknown {
  if (field.kind === "boolean") return draft === true;
  const text = String(draft).trim();
  if (field.kind === "number" || field.kind === "integer") {
    if (text === "") return field.nullable ? null : "";
    const value = Number(text);
    return Number.isFinite(value) ? value : text;
  }
  if (field.kind === "enum") {
    const match = field.options.find((option) => String(option) === text);
    return match === undefined ? text : match;
  }
  if (text === "" && field.nullable) return null;
  return String(draft);
}

export interface ParamChange {
  path: string;
  old: unknown;
  new: unknown;
}

/** The fields whose draft differs from the value in force, in form order. */
export function diffDrafts(fields: ParamField[], values: unknown, drafts: Record<string, Draft>): ParamChange[] {
  const changes: ParamChange[] = [];
  for (const field of fields) {
    const draft = drafts[field.path];
    if (draft === undefined) continue;
    const old = getPath(values, field.path);
    const next = fromDraft(field, draft);
    if (!Object.is(next, old) && !(next === old)) changes.push({ path: field.path, old, new: next });
  }
  return changes;
}
