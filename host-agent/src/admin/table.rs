//! Renders the admin API's JSON for people: a list of objects as a table, an object as
//! aligned `key  value` lines (nested objects as dotted keys) followed by a table for
//! each list of objects in it.
//!
//! It reads the shape of whatever the backend sends rather than fixed fields, so a field
//! the daemon adds shows up without a change here; `--json` gives the exact answer.

use serde_json::{Map, Value};

/// Columns shown first when present, in this order: what names a row.
const KEY_COLUMNS: [&str; 4] = ["name", "guest", "account", "id"];

/// `value` for a terminal, ending in a newline.
pub fn render(value: &Value) -> String {
    match value {
        Value::Array(rows) if rows.iter().all(Value::is_object) => table(rows),
        Value::Object(map) => object(map),
        other => format!("{}\n", cell(other)),
    }
}

/// An object: its fields as `key  value` lines, then each list of objects as a table
/// under its key.
fn object(map: &Map<String, Value>) -> String {
    let mut pairs = Vec::new();
    let mut tables = Vec::new();
    for (key, value) in map {
        match value {
            Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
                tables.push((key, rows))
            }
            _ => flatten(key, value, &mut pairs),
        }
    }
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in &pairs {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    for (key, rows) in tables {
        out.push_str(&format!("\n{key}:\n"));
        out.push_str(&table(rows));
    }
    out
}

/// A list of objects as a table: a column for each (flattened) field any row has, the
/// naming columns first, then in order of appearance; `-` where a row lacks a field.
fn table(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_string();
    }
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|row| {
            let mut fields = Vec::new();
            if let Value::Object(map) = row {
                for (key, value) in map {
                    flatten(key, value, &mut fields);
                }
            }
            fields
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for key in KEY_COLUMNS {
        if flat.iter().any(|row| row.iter().any(|(k, _)| k == key)) {
            columns.push(key.to_string());
        }
    }
    for row in &flat {
        for (key, _) in row {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    let cells: Vec<Vec<&str>> = flat
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map_or("-", |(_, v)| v.as_str())
                })
                .collect()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |values: &[&str]| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for row in &cells {
        line(row);
    }
    out
}

/// `value` as (key, text) pairs: nested objects as `key.field`.
fn flatten(key: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (field, inner) in map {
                flatten(&format!("{key}.{field}"), inner, out);
            }
        }
        other => out.push((key.to_string(), cell(other))),
    }
}

/// One value as text: strings bare, `-` for null, lists comma-separated.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::Array(items) if items.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Keys are written in sorted order: whether serde_json keeps insertion order
    // (`preserve_order`) depends on the rest of the build.
    #[test]
    fn lists_of_objects_are_tables_named_first() {
        let shown = render(&json!([
            {"account": "0:abc", "requests": 3, "tokens": 1200},
            {"account": "0:defg", "extra": null, "tokens": 5},
        ]));
        assert_eq!(
            shown,
            "ACCOUNT  REQUESTS  TOKENS  EXTRA\n\
             0:abc    3         1200    -\n\
             0:defg   -         5       -\n"
        );
    }

    #[test]
    fn objects_are_key_value_lines_then_tables() {
        let shown = render(&json!({
            "guests": [{"drained": false, "name": "g1", "tee": {"kind": "tdx"}}],
            "ledger": {"receipts": 7, "tokens": 90},
            "tags": ["a", "b"],
            "version": "0.1.0",
        }));
        assert_eq!(
            shown,
            "ledger.receipts  7\n\
             ledger.tokens    90\n\
             tags             a,b\n\
             version          0.1.0\n\
             \n\
             guests:\n\
             NAME  DRAINED  TEE.KIND\n\
             g1    false    tdx\n"
        );
    }

    #[test]
    fn empty_lists_and_scalars() {
        assert_eq!(render(&json!([])), "(none)\n");
        assert_eq!(render(&json!("ok")), "ok\n");
        assert_eq!(render(&json!({"guests": []})), "guests  -\n");
    }
}
