//! toncenter v2's JSON shapes, shared by the client and the server so that the two cannot
//! drift apart, and strict decoding of what comes from the other side.
//!
//! Stack encoding (toncenter's, as its `runGetMethod` takes and returns it):
//! - arguments: `["num", "0x1f"]` (hex or decimal), `["tvm.Cell", "<base64 BoC>"]`,
//!   `["tvm.Slice", "<base64 BoC>"]`; the server also takes `"cell"`/`"slice"` with a string
//!   or `{"bytes": ...}`, as toncenter does;
//! - results: `["num", "0x1f"]` (`"-0x1f"` when negative), `["cell", {"bytes": ...}]` for
//!   cells *and* slices, `["null", null]`, `["tuple", {"@type": "tvm.tuple", "elements":
//!   [tvm.stackEntry...]}]` (tonlib's typed form inside tuples).
//!
//! Every number and BoC is bounded before it is parsed: untrusted input on both sides.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use num_bigint::BigInt;
use serde_json::{json, Value};
use tycho_types::cell::Cell;

use crate::chain::{parse_address, MessageInfo, StackValue, TransactionInfo};
use crate::layout::{decode_boc, encode_boc, BocLimits};
use crate::{Error, Result};

/// Most entries on a get method's stack (arguments or results, tuples included).
pub(crate) const MAX_STACK_ENTRIES: usize = 1024;
/// Most tuple nesting.
pub(crate) const MAX_TUPLE_DEPTH: usize = 16;
/// Longest accepted number text: 257 bits are 65 hex or 78 decimal digits.
const MAX_NUMBER_CHARS: usize = 90;
/// Bounds on a BoC on the stack or in a message body.
pub(crate) const STACK_BOC_LIMITS: BocLimits = BocLimits::STATE;

const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn invalid(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        reason: reason.into(),
    }
}

/// Standard base64 with padding (what toncenter writes).
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64, standard or URL-safe, padding optional, refusing more than `max_bytes`.
pub(crate) fn b64_decode(text: &str, max_bytes: usize) -> Result<Vec<u8>> {
    let text = text.trim();
    if text.len() / 4 * 3 > max_bytes.saturating_add(3) {
        return Err(Error::BocTooLarge {
            what: "bytes",
            found: text.len() / 4 * 3,
            max: max_bytes,
        });
    }
    let engine = if text.contains(['-', '_']) {
        &URL_SAFE
    } else {
        &STANDARD
    };
    let bytes = engine
        .decode(text)
        .map_err(|e| Error::Base64(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(Error::BocTooLarge {
            what: "bytes",
            found: bytes.len(),
            max: max_bytes,
        });
    }
    Ok(bytes)
}

/// A base64 BoC to a cell, within `limits`.
pub(crate) fn boc_from_b64(text: &str, limits: &BocLimits) -> Result<Cell> {
    decode_boc(&b64_decode(text, limits.max_bytes)?, limits)
}

/// A cell as base64 BoC.
pub(crate) fn boc_to_b64(cell: &Cell) -> String {
    b64(&encode_boc(cell))
}

/// A 32-byte hash from base64.
pub(crate) fn hash_from_b64(text: &str) -> Result<[u8; 32]> {
    let bytes = b64_decode(text, 32)?;
    bytes
        .try_into()
        .map_err(|_| invalid("hash", "expected 32 bytes"))
}

/// An integer as toncenter writes it: `0x..` hex, `-0x..` when negative.
pub(crate) fn int_to_text(value: &BigInt) -> String {
    let hex = value.magnitude().to_str_radix(16);
    if value.sign() == num_bigint::Sign::Minus {
        format!("-0x{hex}")
    } else {
        format!("0x{hex}")
    }
}

/// An integer from hex (`0x`, optional `-`) or decimal text, or a JSON number; at most 257
/// bits signed, as TVM holds.
pub(crate) fn int_from_json(value: &Value) -> Result<BigInt> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(invalid("number", format!("expected a number, got {other}"))),
    };
    if text.is_empty() || text.len() > MAX_NUMBER_CHARS {
        return Err(invalid("number", format!("{} characters", text.len())));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (radix, digits) = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(invalid("number", format!("{text:?}")));
    }
    let magnitude = BigInt::parse_bytes(digits.as_bytes(), radix)
        .ok_or_else(|| invalid("number", format!("{text:?}")))?;
    let value = if negative { -magnitude } else { magnitude };
    if value.bits() > 256 {
        return Err(invalid("number", "beyond TVM's 257-bit integers"));
    }
    Ok(value)
}

/// A decimal amount (`"123"` or `123`) as u128.
pub(crate) fn u128_from_json(value: &Value, what: &'static str) -> Result<u128> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(
            what,
            format!("expected a non-negative integer, got {value}"),
        )
    })
}

/// A decimal u64 (`"123"` or `123`).
pub(crate) fn u64_from_json(value: &Value, what: &'static str) -> Result<u64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| {
        invalid(
            what,
            format!("expected a non-negative integer, got {value}"),
        )
    })
}

/// A stack argument as the client sends it.
pub(crate) fn arg_to_json(value: &StackValue) -> Result<Value> {
    Ok(match value {
        StackValue::Int(v) => json!(["num", int_to_text(v)]),
        StackValue::Cell(c) => json!(["tvm.Cell", boc_to_b64(c)]),
        StackValue::Slice(c) => json!(["tvm.Slice", boc_to_b64(c)]),
        StackValue::Null => json!(["null", null]),
        StackValue::Tuple(_) => {
            return Err(invalid(
                "get method argument",
                "toncenter v2 takes no tuple arguments",
            ))
        }
    })
}

fn bytes_field(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(map) => map.get("bytes").and_then(Value::as_str),
        _ => None,
    }
}

/// A stack argument as the server receives it (lenient in naming, strict in content).
#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
pub(crate) fn arg_from_json(value: &Value) -> Result<StackValue> {
    let pair = value
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| invalid("stack entry", "expected [type, value]"))?;
    let ty = pair[0]
        .as_str()
        .ok_or_else(|| invalid("stack entry", "type is not a string"))?;
    let cell = |what| {
        bytes_field(&pair[1])
            .ok_or_else(|| invalid("stack entry", format!("{what}: expected base64 bytes")))
            .and_then(|b| boc_from_b64(b, &STACK_BOC_LIMITS))
    };
    Ok(match ty {
        "num" | "number" | "int" => StackValue::Int(int_from_json(&pair[1])?),
        "tvm.Cell" | "cell" => StackValue::Cell(cell("cell")?),
        "tvm.Slice" | "slice" => StackValue::Slice(cell("slice")?),
        "null" => StackValue::Null,
        other => {
            return Err(invalid(
                "stack entry",
                format!("unsupported type {other:?}"),
            ))
        }
    })
}

#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
fn typed_entry(value: &StackValue) -> Value {
    match value {
        StackValue::Null => json!({"@type": "tvm.stackEntryNull"}),
        StackValue::Int(v) => json!({
            "@type": "tvm.stackEntryNumber",
            "number": {"@type": "tvm.numberDecimal", "number": v.to_string()},
        }),
        StackValue::Cell(c) => json!({
            "@type": "tvm.stackEntryCell",
            "cell": {"@type": "tvm.cell", "bytes": boc_to_b64(c)},
        }),
        StackValue::Slice(c) => json!({
            "@type": "tvm.stackEntrySlice",
            "slice": {"@type": "tvm.slice", "bytes": boc_to_b64(c)},
        }),
        StackValue::Tuple(items) => json!({
            "@type": "tvm.stackEntryTuple",
            "tuple": {"@type": "tvm.tuple", "elements": items.iter().map(typed_entry).collect::<Vec<_>>()},
        }),
    }
}

/// A stack result as the server writes it (toncenter's shape: slices as `"cell"`).
#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
pub(crate) fn result_to_json(value: &StackValue) -> Value {
    match value {
        StackValue::Null => json!(["null", null]),
        StackValue::Int(v) => json!(["num", int_to_text(v)]),
        StackValue::Cell(c) | StackValue::Slice(c) => json!(["cell", {"bytes": boc_to_b64(c)}]),
        StackValue::Tuple(items) => json!(["tuple", {
            "@type": "tvm.tuple",
            "elements": items.iter().map(typed_entry).collect::<Vec<_>>(),
        }]),
    }
}

/// Counts entries while decoding, so a hostile answer cannot make us build a huge stack.
struct Budget(usize);

impl Budget {
    fn take(&mut self) -> Result<()> {
        if self.0 == 0 {
            return Err(invalid(
                "stack",
                format!("more than {MAX_STACK_ENTRIES} entries"),
            ));
        }
        self.0 -= 1;
        Ok(())
    }
}

fn typed_from_json(value: &Value, depth: usize, budget: &mut Budget) -> Result<StackValue> {
    budget.take()?;
    let ty = value.get("@type").and_then(Value::as_str).unwrap_or("");
    let field = |outer: &str| {
        value
            .get(outer)
            .and_then(|v| v.get("bytes"))
            .and_then(Value::as_str)
    };
    Ok(match ty {
        "tvm.stackEntryNull" => StackValue::Null,
        "tvm.stackEntryNumber" => {
            let number = value
                .get("number")
                .and_then(|n| n.get("number"))
                .ok_or_else(|| invalid("stack entry", "number without a value"))?;
            StackValue::Int(int_from_json(number)?)
        }
        "tvm.stackEntryCell" => StackValue::Cell(boc_from_b64(
            field("cell").ok_or_else(|| invalid("stack entry", "cell without bytes"))?,
            &STACK_BOC_LIMITS,
        )?),
        "tvm.stackEntrySlice" => StackValue::Cell(boc_from_b64(
            field("slice").ok_or_else(|| invalid("stack entry", "slice without bytes"))?,
            &STACK_BOC_LIMITS,
        )?),
        "tvm.stackEntryTuple" | "tvm.stackEntryList" => {
            let inner = value
                .get("tuple")
                .or_else(|| value.get("list"))
                .ok_or_else(|| invalid("stack entry", "tuple without elements"))?;
            tuple_from_json(inner, depth + 1, budget)?
        }
        other => {
            return Err(invalid(
                "stack entry",
                format!("unsupported type {other:?}"),
            ))
        }
    })
}

fn tuple_from_json(value: &Value, depth: usize, budget: &mut Budget) -> Result<StackValue> {
    if depth > MAX_TUPLE_DEPTH {
        return Err(invalid(
            "stack",
            format!("tuples nested deeper than {MAX_TUPLE_DEPTH}"),
        ));
    }
    let elements = value
        .get("elements")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("stack entry", "tuple without elements"))?;
    Ok(StackValue::Tuple(
        elements
            .iter()
            .map(|e| typed_from_json(e, depth, budget))
            .collect::<Result<_>>()?,
    ))
}

/// A whole result stack as the client receives it.
pub(crate) fn results_from_json(stack: &Value) -> Result<Vec<StackValue>> {
    let entries = stack
        .as_array()
        .ok_or_else(|| invalid("stack", "not an array"))?;
    let mut budget = Budget(MAX_STACK_ENTRIES);
    entries
        .iter()
        .map(|entry| {
            budget.take()?;
            let pair = entry
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or_else(|| invalid("stack entry", "expected [type, value]"))?;
            let ty = pair[0].as_str().unwrap_or("");
            let cell = || {
                bytes_field(&pair[1])
                    .ok_or_else(|| invalid("stack entry", "cell without bytes"))
                    .and_then(|b| boc_from_b64(b, &STACK_BOC_LIMITS))
            };
            Ok(match ty {
                "num" | "number" | "int" => StackValue::Int(int_from_json(&pair[1])?),
                "cell" | "slice" | "builder" | "tvm.Cell" | "tvm.Slice" => {
                    StackValue::Cell(cell()?)
                }
                "null" => StackValue::Null,
                "tuple" | "list" => tuple_from_json(&pair[1], 1, &mut budget)?,
                other => {
                    return Err(invalid(
                        "stack entry",
                        format!("unsupported type {other:?}"),
                    ))
                }
            })
        })
        .collect()
}

#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
fn address_text(addr: &Option<tycho_types::models::StdAddr>) -> String {
    addr.as_ref()
        .map(crate::chain::friendly_address)
        .unwrap_or_default()
}

#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
fn message_to_json(msg: &MessageInfo) -> Value {
    json!({
        "@type": "raw.message",
        "source": address_text(&msg.source),
        "destination": address_text(&msg.destination),
        "value": msg.value.to_string(),
        "fwd_fee": msg.fwd_fee.to_string(),
        "ihr_fee": "0",
        "created_lt": msg.created_lt.to_string(),
        "body_hash": b64(msg.body.repr_hash().as_slice()),
        "msg_data": {
            "@type": "msg.dataRaw",
            "body": boc_to_b64(&msg.body),
            "init_state": "",
        },
        "message": "",
    })
}

/// A transaction in toncenter's `getTransactions` shape.
#[cfg_attr(not(feature = "local-chain"), allow(dead_code))] // the server's side
pub(crate) fn transaction_to_json(account: &str, tx: &TransactionInfo) -> Value {
    json!({
        "@type": "raw.transaction",
        "address": {"@type": "accountAddress", "account_address": account},
        "utime": tx.utime,
        "data": "",
        "transaction_id": {
            "@type": "internal.transactionId",
            "lt": tx.lt.to_string(),
            "hash": b64(&tx.hash),
        },
        "fee": tx.fee.to_string(),
        "storage_fee": "0",
        "other_fee": tx.fee.to_string(),
        "in_msg": tx.in_msg.as_ref().map(message_to_json),
        "out_msgs": tx.out_msgs.iter().map(message_to_json).collect::<Vec<_>>(),
    })
}

fn optional_address(value: Option<&Value>) -> Result<Option<tycho_types::models::StdAddr>> {
    match value.and_then(Value::as_str).map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => parse_address(text).map(Some),
    }
}

fn message_from_json(value: &Value) -> Result<MessageInfo> {
    let field = |name: &str| value.get(name).unwrap_or(&Value::Null);
    let body = match value
        .get("msg_data")
        .and_then(|d| d.get("body"))
        .and_then(Value::as_str)
    {
        Some(text) if !text.is_empty() => boc_from_b64(text, &STACK_BOC_LIMITS)?,
        _ => Cell::default(),
    };
    Ok(MessageInfo {
        source: optional_address(value.get("source"))?,
        destination: optional_address(value.get("destination"))?,
        value: u128_from_json(field("value"), "message value")?,
        fwd_fee: match value.get("fwd_fee") {
            Some(v) => u128_from_json(v, "fwd_fee")?,
            None => 0,
        },
        created_lt: match value.get("created_lt") {
            Some(v) => u64_from_json(v, "created_lt")?,
            None => 0,
        },
        body,
    })
}

/// A transaction from toncenter's `getTransactions` shape.
pub(crate) fn transaction_from_json(value: &Value) -> Result<TransactionInfo> {
    let id = value
        .get("transaction_id")
        .ok_or_else(|| invalid("transaction", "no transaction_id"))?;
    let hash = id
        .get("hash")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("transaction", "no hash"))?;
    let in_msg = match value.get("in_msg") {
        None | Some(Value::Null) => None,
        Some(m) => Some(message_from_json(m)?),
    };
    let out_msgs = match value.get("out_msgs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(message_from_json).collect::<Result<_>>()?,
        Some(_) => return Err(invalid("transaction", "out_msgs is not an array")),
    };
    Ok(TransactionInfo {
        lt: u64_from_json(id.get("lt").unwrap_or(&Value::Null), "lt")?,
        hash: hash_from_b64(hash)?,
        utime: value
            .get("utime")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| invalid("transaction", "no utime"))?,
        fee: u128_from_json(value.get("fee").unwrap_or(&Value::Null), "fee")?,
        in_msg,
        out_msgs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_wire_numbers_round_trip_and_are_bounded() {
        for v in [0i64, 1, -1, 255, -4096, i64::MAX, i64::MIN] {
            let b = BigInt::from(v);
            assert_eq!(int_from_json(&json!(int_to_text(&b))).expect("hex"), b);
            assert_eq!(int_from_json(&json!(v.to_string())).expect("dec"), b);
        }
        assert_eq!(int_from_json(&json!(42)).expect("json"), BigInt::from(42));
        let max = (BigInt::from(1) << 256) - 1;
        assert_eq!(int_from_json(&json!(int_to_text(&max))).expect("max"), max);
        let over = BigInt::from(1) << 256;
        assert!(int_from_json(&json!(int_to_text(&over))).is_err());
        for bad in ["", "0x", "-", "12a", "0xzz", "1 2", "+5"] {
            assert!(int_from_json(&json!(bad)).is_err(), "{bad}");
        }
        assert!(int_from_json(&json!("1".repeat(200))).is_err());
        assert!(int_from_json(&json!(null)).is_err());
    }

    #[test]
    fn billing_wire_stack_round_trip() {
        let cell = tycho_types::cell::CellBuilder::build_from(0xdead_beef_u32).expect("cell");
        let args = vec![
            StackValue::int(-5),
            StackValue::Cell(cell.clone()),
            StackValue::Slice(cell.clone()),
            StackValue::Null,
        ];
        for arg in &args {
            let json = arg_to_json(arg).expect("to");
            assert_eq!(&arg_from_json(&json).expect("from"), arg);
        }
        let results = vec![
            StackValue::int(7),
            StackValue::Slice(cell.clone()),
            StackValue::Tuple(vec![
                StackValue::int(1),
                StackValue::Null,
                StackValue::Tuple(vec![StackValue::Cell(cell.clone())]),
            ]),
        ];
        let json = Value::Array(results.iter().map(result_to_json).collect());
        let back = results_from_json(&json).expect("results");
        let expected: Vec<_> = results.into_iter().map(StackValue::into_result).collect();
        assert_eq!(back, expected);
        // Hostile shapes.
        assert!(results_from_json(&json!([["num"]])).is_err());
        assert!(results_from_json(&json!([["cell", {"bytes": "not base64!"}]])).is_err());
        assert!(results_from_json(&json!([["cont", {}]])).is_err());
        let mut deep = json!({"@type": "tvm.tuple", "elements": []});
        for _ in 0..40 {
            deep = json!({"@type": "tvm.tuple", "elements": [{"@type": "tvm.stackEntryTuple", "tuple": deep}]});
        }
        assert!(results_from_json(&json!([["tuple", deep]])).is_err());
        let many = vec![json!(["num", "1"]); MAX_STACK_ENTRIES + 1];
        assert!(results_from_json(&Value::Array(many)).is_err());
        assert!(arg_to_json(&StackValue::Tuple(vec![])).is_err());
    }

    #[test]
    fn billing_wire_base64_is_bounded_and_lenient() {
        assert_eq!(b64_decode("AQID", 3).expect("std"), vec![1, 2, 3]);
        assert_eq!(b64_decode("-_8", 3).expect("url"), vec![0xfb, 0xff]);
        assert_eq!(b64_decode("+/8=", 3).expect("std"), vec![0xfb, 0xff]);
        assert!(b64_decode("AQIDBA==", 3).is_err());
        assert!(b64_decode(&"A".repeat(10_000), 100).is_err());
    }
}
