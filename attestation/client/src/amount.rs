//! Amounts of the chain's coin, as the user types and reads them.
//!
//! Every amount is an integer number of nano-units (10⁻⁹ of a coin) inside: the contract
//! counts nano-units, prices are nano-units per million tokens, and a decimal fraction
//! typed by a user must become exactly the integer the chain will move. So text is parsed
//! digit by digit (no floating point, which cannot represent 0.1 and rounds large values),
//! with at most 9 decimals, and printed with exactly 9.
//!
//! The coin's name appears in one place, [`COIN`]: Toncoin is reported renamed (GRAM) with
//! the nano-unit unchanged (`shared/design/TON.md`), and only user-facing text names it.

use std::fmt;
use std::str::FromStr;

/// The coin's name in user-facing text.
pub const COIN: &str = "TON";

/// Nano-units per coin.
pub const NANO_PER_COIN: u128 = 1_000_000_000;

/// Decimals of a coin amount.
pub const DECIMALS: usize = 9;

/// The largest amount the chain can carry: TL-B `Coins` is `VarUInteger 16`, 120 bits.
pub const MAX_NANO: u128 = (1 << 120) - 1;

/// An amount in nano-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// The amount in nano-units.
    pub fn nano(self) -> u128 {
        self.0
    }

    /// Parses `12`, `12.5`, `0.000000001` (a dot, at most 9 decimals, no sign, no
    /// exponent, no spaces). An optional unit suffix (` TON`, any case) is accepted so
    /// printed amounts read back.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let number = strip_unit(trimmed);
        let bad = |why: &str| format!("'{text}' is not an amount of {COIN}: {why}");
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (number, None),
        };
        if whole.is_empty() && fraction.is_none_or(str::is_empty) {
            return Err(bad("expected digits, e.g. 1.5"));
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "only digits and one '.' are allowed (no sign, exponent or separators)",
            ));
        }
        let fraction = fraction.unwrap_or_default();
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                "only digits and one '.' are allowed (no sign, exponent or separators)",
            ));
        }
        if fraction.len() > DECIMALS {
            return Err(bad(&format!(
                "at most {DECIMALS} decimals (1 nano{COIN} = 0.000000001 {COIN})"
            )));
        }
        let too_large = || {
            bad(&format!(
                "larger than the chain's maximum ({} {COIN})",
                Amount(MAX_NANO)
            ))
        };
        let mut nano: u128 = 0;
        for digit in whole.bytes() {
            nano = nano
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .ok_or_else(too_large)?;
        }
        nano = nano.checked_mul(NANO_PER_COIN).ok_or_else(too_large)?;
        let mut scale = NANO_PER_COIN / 10;
        for digit in fraction.bytes() {
            nano += u128::from(digit - b'0') * scale;
            scale /= 10;
        }
        if nano > MAX_NANO {
            return Err(too_large());
        }
        Ok(Self(nano))
    }
}

/// `text` without a trailing coin unit (`1.5 TON`, `1.5ton`).
fn strip_unit(text: &str) -> &str {
    let n = COIN.len();
    if text.len() > n
        && text.is_char_boundary(text.len() - n)
        && text[text.len() - n..].eq_ignore_ascii_case(COIN)
    {
        text[..text.len() - n].trim_end()
    } else {
        text
    }
}

impl fmt::Display for Amount {
    /// Exactly 9 decimals, no unit: `1.500000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / NANO_PER_COIN,
            self.0 % NANO_PER_COIN
        )
    }
}

impl FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl From<u64> for Amount {
    fn from(nano: u64) -> Self {
        Self(u128::from(nano))
    }
}

/// `1.500000000 TON`.
pub fn with_unit(amount: Amount) -> String {
    format!("{amount} {COIN}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_amounts_parse_to_exact_nano_units() {
        for (text, nano) in [
            ("0", 0u128),
            ("1", 1_000_000_000),
            ("1.5", 1_500_000_000),
            ("0.1", 100_000_000),
            (".5", 500_000_000),
            ("2.", 2_000_000_000),
            ("0.000000001", 1),
            ("123456789.987654321", 123_456_789_987_654_321),
            ("1.5 TON", 1_500_000_000),
            ("0.01ton", 10_000_000),
            ("  7  ", 7_000_000_000),
            ("1329227995784915872903807060.280344575", MAX_NANO),
        ] {
            assert_eq!(Amount::parse(text), Ok(Amount(nano)), "{text}");
        }
    }

    #[test]
    fn billing_amounts_refuse_what_is_not_exact() {
        for (text, reason) in [
            ("", "expected digits"),
            (".", "expected digits"),
            ("TON", "only digits"),
            ("-1", "only digits"),
            ("+1", "only digits"),
            ("1e9", "only digits"),
            ("1,5", "only digits"),
            ("1.2.3", "only digits"),
            ("1 000", "only digits"),
            ("0.0000000001", "at most 9 decimals"),
            ("1329227995784915872903807060.280344576", "maximum"),
            ("99999999999999999999999999999999999999999", "maximum"),
            ("١", "only digits"),
        ] {
            let err = Amount::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn billing_amounts_print_with_nine_decimals_and_read_back() {
        for (nano, text) in [
            (0u128, "0.000000000"),
            (1, "0.000000001"),
            (1_500_000_000, "1.500000000"),
            (10_000_000, "0.010000000"),
            (MAX_NANO, "1329227995784915872903807060.280344575"),
        ] {
            assert_eq!(Amount(nano).to_string(), text);
            assert_eq!(Amount::parse(text), Ok(Amount(nano)));
            assert_eq!(Amount::parse(&with_unit(Amount(nano))), Ok(Amount(nano)));
        }
        assert_eq!(with_unit(Amount(1)), "0.000000001 TON");
    }
}
