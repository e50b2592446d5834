//! When to settle a key of an escrow, and which charges go into one wallet message: pure
//! functions of the voucher, the escrow's on-chain state and the clock, so every rule is
//! tested without a chain.
//!
//! Why thresholds at all: each charge costs gas (about 0.003 TON), so settling every
//! request would eat small bills; never settling would leave the operator's earnings
//! exposed to an escrow that empties or closes. So a key is settled when what it owes is
//! worth the gas (`settle_min_nanoton`), or is a large share of the stake that backs it
//! (the guest stops serving at the stake, and what is owed above it is at risk), or has
//! waited long enough (`settle_max_age_secs`), and always before its settlement window
//! closes (the authorization's expiry plus the close delay, or `unlock_at` of a closing
//! escrow: from then on the escrow refuses the voucher, exit 1007).
//!
//! What is known to fail is not sent: a voucher above its authorization's cap (1006), past
//! its window (1007), or larger than the escrow holds (1008, until the client tops up).

use std::cmp::Reverse;

use cocoon_billing::layout::STORAGE_RESERVE;

/// The thresholds of `[billing]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub min_nanoton: u128,
    /// Share of the stake, in millionths (0 to 1 000 000).
    pub stake_share_ppm: u32,
    pub max_age_secs: u64,
    pub deadline_margin_secs: u64,
}

impl Thresholds {
    /// From `[billing]`'s values (`stake_share` already checked to be within 0..=1).
    pub fn new(min_nanoton: u64, stake_share: f64, max_age_secs: u64, margin_secs: u64) -> Self {
        Self {
            min_nanoton: u128::from(min_nanoton),
            stake_share_ppm: (stake_share.clamp(0.0, 1.0) * 1e6).round() as u32,
            max_age_secs,
            deadline_margin_secs: margin_secs,
        }
    }

    /// `share × stake`, rounded up; `None` when the share is 0 (the rule is off).
    pub fn stake_threshold(&self, stake: u128) -> Option<u128> {
        (self.stake_share_ppm > 0)
            .then(|| (stake * u128::from(self.stake_share_ppm)).div_ceil(1_000_000))
    }
}

/// What is known about one (escrow, guest key) when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// The escrow's cumulative charge for the key once the newest voucher lands.
    pub charged_new: u128,
    /// What the escrow has charged for the key so far (`get_guest`).
    pub charged_old: u128,
    /// The escrow's balance, stake, close delay and `unlock_at` (`get_escrow`).
    pub balance: u128,
    pub stake: u128,
    pub close_delay: u32,
    pub unlock_at: u32,
    /// The voucher's authorization.
    pub cap: u128,
    pub expires_at: u32,
    /// When the oldest voucher not yet paid was stored (unix seconds).
    pub oldest_unsettled_at: u64,
}

impl Inputs {
    /// What settling now moves.
    pub fn owed(&self) -> u128 {
        self.charged_new.saturating_sub(self.charged_old)
    }

    /// The last second the escrow accepts the voucher (exclusive bound).
    pub fn window_end(&self) -> u64 {
        let end = u64::from(self.expires_at) + u64::from(self.close_delay);
        if self.unlock_at != 0 {
            end.min(u64::from(self.unlock_at))
        } else {
            end
        }
    }
}

/// Why a key is settled now (in order of urgency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The escrow is closing: its balance is the client's from `unlock_at`.
    Closing,
    /// The settlement window closes within the margin.
    Deadline,
    /// Owed at least `settle_min_nanoton`.
    Amount,
    /// Owed at least `settle_stake_share` of the stake.
    StakeShare,
    /// The oldest unpaid voucher is older than `settle_max_age_secs`.
    Age,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closing => "closing",
            Self::Deadline => "deadline",
            Self::Amount => "amount",
            Self::StakeShare => "stake_share",
            Self::Age => "age",
        }
    }
}

/// The decision for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send a charge now.
    Settle(Reason),
    /// Nothing to do yet (owed is below every threshold, or nothing is owed).
    Wait,
    /// The escrow would refuse it; why (nothing is sent).
    Hold(String),
}

/// Decides whether to settle one key at `now` (unix seconds).
pub fn decide(inputs: &Inputs, thresholds: &Thresholds, now: u64) -> Verdict {
    let owed = inputs.owed();
    if owed == 0 {
        return Verdict::Wait;
    }
    let end = inputs.window_end();
    if now >= end {
        return Verdict::Hold(format!(
            "the settlement window closed at {end} (authorization expiry + close delay, or \
             unlock_at): the escrow refuses the voucher (1007)"
        ));
    }
    if inputs.charged_new > inputs.cap {
        return Verdict::Hold(format!(
            "the voucher charges {} in all, above its authorization's cap {} (1006)",
            inputs.charged_new, inputs.cap
        ));
    }
    let available = inputs.balance.saturating_sub(STORAGE_RESERVE);
    if owed > available {
        return Verdict::Hold(format!(
            "owes {owed} but the escrow holds {available} above its storage reserve (1008): \
             waiting for a top-up"
        ));
    }
    if inputs.unlock_at != 0 {
        return Verdict::Settle(Reason::Closing);
    }
    if now.saturating_add(thresholds.deadline_margin_secs) >= end {
        return Verdict::Settle(Reason::Deadline);
    }
    if owed >= thresholds.min_nanoton {
        return Verdict::Settle(Reason::Amount);
    }
    if let Some(threshold) = thresholds.stake_threshold(inputs.stake) {
        if inputs.stake > 0 && owed >= threshold {
            return Verdict::Settle(Reason::StakeShare);
        }
    }
    if now.saturating_sub(inputs.oldest_unsettled_at) >= thresholds.max_age_secs {
        return Verdict::Settle(Reason::Age);
    }
    Verdict::Wait
}

/// One key chosen to settle: why, by when, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen<T> {
    pub reason: Reason,
    pub window_end: u64,
    pub owed: u128,
    pub item: T,
}

/// The charges of one wallet message: the most urgent first (closing, then the nearest
/// deadline), then the largest amounts; at most `max_batch`.
pub fn batch<T>(mut chosen: Vec<Chosen<T>>, max_batch: usize) -> Vec<Chosen<T>> {
    chosen.sort_by_key(|c| (c.reason, c.window_end, Reverse(c.owed)));
    chosen.truncate(max_batch);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn thresholds() -> Thresholds {
        Thresholds::new(1_000_000_000, 0.5, 3_600, 600)
    }

    fn inputs() -> Inputs {
        Inputs {
            charged_new: 300_000_000,
            charged_old: 100_000_000,
            balance: 10_000_000_000,
            stake: 1_000_000_000,
            close_delay: 3_600,
            unlock_at: 0,
            cap: 5_000_000_000,
            expires_at: (NOW + 86_400) as u32,
            oldest_unsettled_at: NOW - 60,
        }
    }

    #[test]
    fn billing_decide_waits_below_every_threshold() {
        assert_eq!(decide(&inputs(), &thresholds(), NOW), Verdict::Wait);
        let nothing = Inputs {
            charged_new: 100_000_000,
            ..inputs()
        };
        assert_eq!(nothing.owed(), 0);
        assert_eq!(decide(&nothing, &thresholds(), NOW), Verdict::Wait);
        // A lower voucher (the escrow would refuse it) owes nothing either.
        let lower = Inputs {
            charged_new: 1,
            ..inputs()
        };
        assert_eq!(decide(&lower, &thresholds(), NOW), Verdict::Wait);
    }

    #[test]
    fn billing_decide_settles_at_the_amount_threshold_exactly() {
        let t = Thresholds::new(200_000_000, 0.0, 3_600, 600);
        assert_eq!(decide(&inputs(), &t, NOW), Verdict::Settle(Reason::Amount));
        let t = Thresholds::new(200_000_001, 0.0, 3_600, 600);
        assert_eq!(decide(&inputs(), &t, NOW), Verdict::Wait);
    }

    #[test]
    fn billing_decide_settles_at_a_share_of_the_stake() {
        // Owed 200_000_000; half of a 400_000_000 stake is 200_000_000.
        let at = Inputs {
            stake: 400_000_000,
            ..inputs()
        };
        assert_eq!(
            decide(&at, &thresholds(), NOW),
            Verdict::Settle(Reason::StakeShare)
        );
        let below = Inputs {
            stake: 400_000_002,
            ..inputs()
        };
        assert_eq!(decide(&below, &thresholds(), NOW), Verdict::Wait);
        // No stake, or a share of 0: the rule is off.
        let none = Inputs {
            stake: 0,
            ..inputs()
        };
        assert_eq!(decide(&none, &thresholds(), NOW), Verdict::Wait);
        let off = Thresholds::new(1_000_000_000, 0.0, 3_600, 600);
        assert_eq!(decide(&at, &off, NOW), Verdict::Wait);
        assert_eq!(off.stake_threshold(5), None);
        // Rounded up, in integers: a third of 10 is 4.
        let third = Thresholds::new(1, 1.0 / 3.0, 1, 1);
        assert_eq!(third.stake_threshold(10), Some(4));
        assert_eq!(Thresholds::new(1, 1.0, 1, 1).stake_threshold(7), Some(7));
    }

    #[test]
    fn billing_decide_settles_old_vouchers() {
        let old = Inputs {
            oldest_unsettled_at: NOW - 3_600,
            ..inputs()
        };
        assert_eq!(
            decide(&old, &thresholds(), NOW),
            Verdict::Settle(Reason::Age)
        );
        let young = Inputs {
            oldest_unsettled_at: NOW - 3_599,
            ..inputs()
        };
        assert_eq!(decide(&young, &thresholds(), NOW), Verdict::Wait);
    }

    #[test]
    fn billing_decide_settles_before_the_window_closes() {
        // Window end = expires_at + close_delay; the margin is 600 s.
        let near = Inputs {
            expires_at: (NOW + 600 - 3_600) as u32,
            ..inputs()
        };
        assert_eq!(near.window_end(), NOW + 600);
        assert_eq!(
            decide(&near, &thresholds(), NOW),
            Verdict::Settle(Reason::Deadline)
        );
        let later = Inputs {
            expires_at: (NOW + 601 - 3_600) as u32,
            ..inputs()
        };
        assert_eq!(decide(&later, &thresholds(), NOW), Verdict::Wait);
        // Closed: the escrow refuses it, so nothing is sent.
        let closed = Inputs {
            expires_at: (NOW - 3_600) as u32,
            ..inputs()
        };
        assert!(matches!(
            decide(&closed, &thresholds(), NOW),
            Verdict::Hold(why) if why.contains("1007")
        ));
    }

    #[test]
    fn billing_decide_settles_a_closing_escrow_at_once_until_unlock() {
        let closing = Inputs {
            unlock_at: (NOW + 100) as u32,
            ..inputs()
        };
        assert_eq!(closing.window_end(), NOW + 100);
        assert_eq!(
            decide(&closing, &thresholds(), NOW),
            Verdict::Settle(Reason::Closing)
        );
        assert!(matches!(
            decide(&closing, &thresholds(), NOW + 100),
            Verdict::Hold(_)
        ));
    }

    #[test]
    fn billing_decide_holds_what_the_escrow_would_refuse() {
        let capped = Inputs {
            cap: 299_999_999,
            oldest_unsettled_at: 0,
            ..inputs()
        };
        assert!(matches!(
            decide(&capped, &thresholds(), NOW),
            Verdict::Hold(why) if why.contains("1006")
        ));
        // Owed 200_000_000: the escrow must hold it above its 10_000_000 reserve.
        let exact = Inputs {
            balance: 210_000_000,
            oldest_unsettled_at: 0,
            ..inputs()
        };
        assert_eq!(
            decide(&exact, &thresholds(), NOW),
            Verdict::Settle(Reason::Age)
        );
        let short = Inputs {
            balance: 209_999_999,
            oldest_unsettled_at: 0,
            ..inputs()
        };
        assert!(matches!(
            decide(&short, &thresholds(), NOW),
            Verdict::Hold(why) if why.contains("1008")
        ));
    }

    fn chosen(reason: Reason, window_end: u64, owed: u128, item: u32) -> Chosen<u32> {
        Chosen {
            reason,
            window_end,
            owed,
            item,
        }
    }

    #[test]
    fn billing_batch_orders_by_urgency_then_amount_and_caps_the_size() {
        let all = vec![
            chosen(Reason::Age, 10, 5, 1),
            chosen(Reason::Amount, 50, 7, 2),
            chosen(Reason::Amount, 50, 9, 3),
            chosen(Reason::Closing, 90, 1, 4),
            chosen(Reason::Deadline, 20, 1, 5),
            chosen(Reason::Deadline, 15, 1, 6),
        ];
        let order = |b: Vec<Chosen<u32>>| b.into_iter().map(|c| c.item).collect::<Vec<_>>();
        assert_eq!(order(batch(all.clone(), 255)), vec![4, 6, 5, 3, 2, 1]);
        assert_eq!(order(batch(all.clone(), 2)), vec![4, 6]);
        assert_eq!(order(batch(all, 1)), vec![4]);
        let many: Vec<_> = (0..300)
            .map(|i| chosen(Reason::Amount, 1, i, i as u32))
            .collect();
        let full = batch(many, 255);
        assert_eq!(full.len(), 255);
        assert_eq!(full[0].owed, 299);
    }
}
