// Renders /openapi.json: every operation with its parameters, request bodies and responses.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function resolve(spec, schema, depth = 0) {
  if (!schema || depth > 6) return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve(spec, spec.components.schemas[name], depth + 1);
  }
  const out = Array.isArray(schema) ? [] : {};
  for (const [k, v] of Object.entries(schema)) {
    out[k] = v && typeof v === "object" ? resolve(spec, v, depth + 1) : v;
  }
  return out;
}

// A schema as a short JSON-like sketch: {"label": integer, "probabilities": [number], ...}
function sketch(s, indent = "") {
  if (!s) return "any";
  if (s.anyOf) return s.anyOf.map((x) => sketch(x, indent)).join(" | ");
  if (s.type === "array") return `[${sketch(s.items, indent)}]`;
  if (s.type === "object" || s.properties) {
    const props = Object.entries(s.properties || {});
    if (!props.length) return "object";
    const inner = indent + "  ";
    const lines = props.map(([k, v]) => {
      const note = v.description ? `   // ${v.description}` : "";
      return `${inner}"${k}": ${sketch(v, inner)}${note}`;
    });
    return `{\n${lines.join(",\n")}\n${indent}}`;
  }
  if (s.format === "binary") return "<bytes>";
  return s.type || "any";
}

function operation(spec, path, method, op) {
  const box = el("section", undefined, "op");
  const h = el("h2");
  h.append(el("span", method.toUpperCase(), `method ${method}`), el("code", path),
           el("small", op.summary || ""));
  box.appendChild(h);
  if (op.description) box.appendChild(el("p", op.description));
  if (op.parameters && op.parameters.length) {
    const t = el("table");
    const head = el("tr");
    for (const c of ["parameter", "in", "type", "default", "description"]) head.append(el("th", c));
    t.append(head);
    for (const p of op.parameters) {
      const s = resolve(spec, p.schema || {});
      const type = s.anyOf ? s.anyOf.map((x) => x.type).join(" | ") : s.type;
      const range = [s.minimum !== undefined ? `≥ ${s.minimum}` : "",
                     s.maximum !== undefined ? `≤ ${s.maximum}` : "",
                     s.pattern ? s.pattern : ""].filter(Boolean).join(", ");
      const row = el("tr");
      row.append(el("td", p.name + (p.required ? " *" : "")), el("td", p.in),
                 el("td", type + (range ? ` (${range})` : "")),
                 el("td", s.default === undefined ? "" : String(s.default)),
                 el("td", p.description || s.description || ""));
      t.append(row);
    }
    box.appendChild(t);
  }
  if (op.requestBody) {
    box.appendChild(el("h3", "Request body"));
    for (const [type, media] of Object.entries(op.requestBody.content || {})) {
      box.appendChild(el("div", type));
      box.appendChild(el("pre", sketch(resolve(spec, media.schema))));
    }
  }
  box.appendChild(el("h3", "Responses"));
  for (const [code, r] of Object.entries(op.responses || {})) {
    const media = r.content && r.content["application/json"];
    box.appendChild(el("div", `${code}: ${r.description || ""}`));
    if (media && media.schema && Object.keys(media.schema).length) {
      box.appendChild(el("pre", sketch(resolve(spec, media.schema))));
    }
  }
  return box;
}

async function main() {
  const root = document.getElementById("api");
  try {
    const spec = await (await fetch("/openapi.json")).json();
    document.getElementById("api-summary").textContent =
      `${spec.info.title} ${spec.info.version}: ${spec.info.description || ""} ` +
      "Errors are JSON {\"error\": \"...\"} with a 4xx status.";
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        root.appendChild(operation(spec, path, method, op));
      }
    }
  } catch (err) {
    root.textContent = `cannot read /openapi.json: ${err.message}`;
  }
}

main();
