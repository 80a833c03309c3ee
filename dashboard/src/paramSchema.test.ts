import { describe, expect, it } from "vitest";
import { boundsText, buildSections, deref, diffDrafts, fromDraft, resolvePointer, toDraft, withinBounds, type JsonSchema } from "./paramSchema";
import { parameterSchema, parameters } from "./test/fixtures";

const schema = parameterSchema as JsonSchema;

describe("parameter schema", () => {
  it("resolves $refs into $defs", () => {
    expect(resolvePointer(schema, "#/$defs/Limits")?.title).toBe("Limits");
    expect(resolvePointer(schema, "#/$defs/Nope")).toBeNull();
    expect(deref(schema, { $ref: "#/$defs/RiskSettings", description: "override" }).description).toBe("override");
  });

  it("builds one section per $ref'd object with dotted field paths", () => {
    const sections = buildSections(schema);
    expect(sections.map((s) => s.key)).toEqual(["limits", "risk"]);
    expect(sections[0]?.fields.map((f) => f.path)).toEqual(["limits.max_position", "limits.min_trade", "limits.allow_short"]);
    expect(sections[1]?.fields).toHaveLength(5);
    const maxPosition = sections[0]!.fields[0]!;
    expect(maxPosition).toMatchObject({ kind: "number", title: "Max Position", exclusiveMinimum: 0, maximum: 1, minimum: null });
    expect(sections[0]!.fields[2]!.kind).toBe("boolean");
  });

  it("handles Optional (anyOf with null), nested objects, enums and draft-4 exclusive bounds", () => {
    const custom: JsonSchema = {
      $defs: { Inner: { type: "object", properties: { depth: { type: "integer", minimum: 1 } } } },
      properties: {
        section: {
          type: "object",
          properties: {
            cap: { anyOf: [{ type: "number", maximum: 5 }, { type: "null" }], title: "Cap" },
            inner: { $ref: "#/$defs/Inner" },
            mode: { enum: ["a", "b"], type: "string" },
            old: { type: "number", minimum: 0, exclusiveMinimum: true },
          },
        },
        top: { type: "boolean" },
      },
    };
    const sections = buildSections(custom);
    expect(sections.map((s) => s.key)).toEqual(["general", "section"]);
    const fields = sections[1]!.fields;
    expect(fields.map((f) => f.path)).toEqual(["section.cap", "section.inner.depth", "section.mode", "section.old"]);
    expect(fields[0]).toMatchObject({ nullable: true, maximum: 5, kind: "number" });
    expect(fields[1]).toMatchObject({ kind: "integer", minimum: 1, step: 1 });
    expect(fields[2]).toMatchObject({ kind: "enum", options: ["a", "b"] });
    expect(fields[3]).toMatchObject({ exclusiveMinimum: 0, minimum: null });
  });

  it("describes bounds and checks them (as hints)", () => {
    const [limits, risk] = buildSections(schema);
    expect(boundsText(limits!.fields[0]!)).toBe("0 < x ≤ 1");
    expect(boundsText(limits!.fields[1]!)).toBe("0 ≤ x ≤ 1");
    expect(boundsText(risk!.fields[0]!)).toBe("x > 0");
    expect(boundsText(limits!.fields[2]!)).toBeNull();
    expect(withinBounds(limits!.fields[0]!, 0)).toBe(false);
    expect(withinBounds(limits!.fields[0]!, 1)).toBe(true);
    expect(withinBounds(limits!.fields[0]!, 1.01)).toBe(false);
  });

  it("diffs drafts against the values in force, numbers as numbers", () => {
    const fields = buildSections(schema).flatMap((s) => s.fields);
    const drafts = Object.fromEntries(fields.map((f) => [f.path, toDraft(f, (parameters.values as never)[f.section][f.name])]));
    expect(diffDrafts(fields, parameters.values, drafts)).toEqual([]);
    drafts["limits.max_position"] = "0.5";
    drafts["limits.allow_short"] = false;
    drafts["risk.stale_after_bars"] = "1.0"; // same number: not a change
    expect(diffDrafts(fields, parameters.values, drafts)).toEqual([
      { path: "limits.max_position", old: 0.8, new: 0.5 },
      { path: "limits.allow_short", old: true, new: false },
    ]);
  });

  it("sends what cannot be parsed as typed, for the server to refuse", () => {
    const field = buildSections(schema)[0]!.fields[0]!;
    expect(fromDraft(field, "2")).toBe(2);
    expect(fromDraft(field, "abc")).toBe("abc");
    expect(fromDraft(field, "")).toBe("");
  });
});
