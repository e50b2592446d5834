//! Token selection for every request: our own sampler, run inside mistral.rs as a
//! custom logits processor.
//!
//! Why not the engine's sampler: mistral.rs 0.8.1 draws every sample from one RNG per
//! engine, seeded once at start (`engine/mod.rs`, `SEED = 0`), so a request's `seed`
//! cannot make its output reproducible while other requests run; and the log
//! probabilities it reports are base-10 logs of the post-temperature, post-top-p
//! weights when sampling, and of the raw logits (not probabilities) when greedy
//! (`sampler.rs`, `sample_argmax`). OpenAI's `logprobs` are natural-log probabilities.
//!
//! So each sequence gets a [`SeededSampler`]: mistral.rs applies its frequency and
//! presence penalties and (for `response_format`) its grammar mask, then calls us; we
//! compute the log-softmax, pick the token (argmax at temperature 0, else temperature,
//! top-p and a ChaCha RNG seeded from the request), record the choice, and hand back
//! logits in which only the chosen token is finite. The engine is told to sample
//! greedily, so it takes exactly our token.
//!
//! The finite value we leave at the chosen token is `step + 1`: the engine reports
//! `log10` of it as the token's "logprob" in each streamed chunk, which tells the
//! server which of our records a chunk has reached ([`step_of_reported_logprob`]).
//! With a grammar, mistral.rs may call the sampler twice for one position (the first
//! pick was not allowed); the second call, on the masked logits, replaces the first.

use std::sync::{Arc, Mutex, MutexGuard};

use mistralrs::{CustomLogitsProcessor, DType, Tensor};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One sampled token: its id, natural-log probability and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenChoice {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)`, most likely first; empty unless top logprobs were asked for.
    pub top: Vec<(u32, f32)>,
}

/// How tokens are picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f64,
    /// How many alternatives to record per token (0 to 20).
    pub top_logprobs: usize,
    pub seed: u64,
}

struct State {
    rng: ChaCha8Rng,
    records: Vec<TokenChoice>,
    last_context_len: Option<usize>,
}

/// The per-sequence sampler; shared (`Arc`) between the engine and the server.
pub struct SeededSampler {
    config: SamplerConfig,
    state: Mutex<State>,
}

impl SeededSampler {
    pub fn new(config: SamplerConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State {
                rng: ChaCha8Rng::seed_from_u64(config.seed),
                records: Vec::new(),
                last_context_len: None,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (records are pushed
        // whole), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tokens sampled so far: the sequence's exact completion-token count.
    pub fn count(&self) -> usize {
        self.state().records.len()
    }

    /// Records `from..` (clamped to what exists).
    pub fn records_from(&self, from: usize) -> Vec<TokenChoice> {
        let state = self.state();
        state.records.get(from..).unwrap_or_default().to_vec()
    }
}

impl CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        let values: Vec<f32> = logits.to_dtype(DType::F32)?.to_vec1()?;
        let mut state = self.state();
        let u = uniform(&mut state.rng);
        let choice = pick(&values, &self.config, u)
            .ok_or_else(|| std::io::Error::other("the model produced no finite logit"))?;
        let chosen = choice.token as usize;
        if state.last_context_len == Some(context.len()) {
            // Second call for the same position (grammar mask): replace the first pick.
            state.records.pop();
        }
        state.last_context_len = Some(context.len());
        state.records.push(choice);
        let step = state.records.len() - 1;
        drop(state);
        let mut out = vec![f32::NEG_INFINITY; values.len()];
        out[chosen] = step_marker(step);
        Tensor::from_vec(out, values.len(), logits.device())
    }
}

/// The value left at the chosen token for step `step` (0-based): `step + 1`.
fn step_marker(step: usize) -> f32 {
    (step + 1) as f32
}

/// Recovers the step from the `logprob` mistral.rs reports for a chunk: it is
/// `log10(step + 1)` computed in `f32`, exact enough for steps below 10^5.
pub fn step_of_reported_logprob(logprob: f32) -> Option<usize> {
    if !logprob.is_finite() || logprob < 0.0 {
        return None;
    }
    let marker = 10f64.powf(f64::from(logprob)).round();
    (marker >= 1.0).then(|| marker as usize - 1)
}

/// A uniform draw in [0, 1) from 53 random bits.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Picks a token from `logits` given a uniform draw `u`; `None` if no logit is finite.
pub fn pick(logits: &[f32], config: &SamplerConfig, u: f64) -> Option<TokenChoice> {
    let max = logits
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let finite = |v: f32| if v.is_finite() { v } else { f32::NEG_INFINITY };
    let sum: f64 = logits
        .iter()
        .map(|&v| (f64::from(finite(v)) - f64::from(max)).exp())
        .sum();
    let log_z = f64::from(max) + sum.ln();
    let logprob = |i: usize| (f64::from(finite(logits[i])) - log_z) as f32;

    let token = if config.temperature <= 0.0 {
        // First maximum: deterministic tie-breaking.
        logits.iter().position(|&v| v == max).unwrap_or_default()
    } else {
        sample(logits, max, config, u)
    };
    let top = top_k(logits, config.top_logprobs)
        .into_iter()
        .map(|i| (i as u32, logprob(i)))
        .collect();
    Some(TokenChoice {
        token: token as u32,
        logprob: logprob(token),
        top,
    })
}

/// Temperature and top-p sampling with the draw `u`.
fn sample(logits: &[f32], max: f32, config: &SamplerConfig, u: f64) -> usize {
    let t = config.temperature;
    let mut weighted: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i, ((f64::from(v) - f64::from(max)) / t).exp()))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    if config.top_p < 1.0 {
        weighted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = weighted.iter().map(|(_, w)| w).sum();
        let mut kept = 0.0;
        let mut keep = 0;
        for (_, w) in &weighted {
            keep += 1;
            kept += w;
            if kept >= config.top_p * total {
                break;
            }
        }
        weighted.truncate(keep.max(1));
    }
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    let mut target = u * total;
    for (i, w) in &weighted {
        if target < *w {
            return *i;
        }
        target -= w;
    }
    // Rounding left a sliver past the end: the last candidate takes it.
    weighted.last().map(|(i, _)| *i).unwrap_or_default()
}

/// Indices of the `k` largest finite logits, largest first (ties: lower index first).
fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if idx.len() > k {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(temperature: f64, top_p: f64, top_logprobs: usize) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_p,
            top_logprobs,
            seed: 7,
        }
    }

    #[test]
    fn greedy_picks_the_argmax_with_natural_log_probabilities() {
        let logits = [1.0f32, 3.0, 2.0, f32::NEG_INFINITY];
        let c = pick(&logits, &config(0.0, 1.0, 2), 0.99).unwrap();
        assert_eq!(c.token, 1);
        let z: f64 = [1.0f64, 3.0, 2.0].iter().map(|v| v.exp()).sum();
        assert!((f64::from(c.logprob) - (3.0 - z.ln())).abs() < 1e-5);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((f64::from(c.top[1].1) - (2.0 - z.ln())).abs() < 1e-5);
        assert!(pick(&[f32::NEG_INFINITY; 3], &config(0.0, 1.0, 0), 0.5).is_none());
    }

    #[test]
    fn sampling_follows_the_draw_and_top_p_cuts_the_tail() {
        // Equal logits: the draw selects the bucket.
        let logits = [0.0f32; 4];
        let picks: Vec<u32> = [0.1, 0.3, 0.6, 0.9]
            .iter()
            .map(|&u| pick(&logits, &config(1.0, 1.0, 0), u).unwrap().token)
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 3]);
        // One dominant token with top_p 0.5: nothing else can be drawn.
        let logits = [0.0f32, 10.0, 0.0];
        for u in [0.0, 0.5, 0.999_999] {
            assert_eq!(pick(&logits, &config(1.0, 0.5, 0), u).unwrap().token, 1);
        }
        // Without top_p, a draw near 1 reaches the last token.
        assert_eq!(
            pick(&logits, &config(1.0, 1.0, 0), 0.999_999)
                .unwrap()
                .token,
            2
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens_and_a_second_call_replaces_the_first() {
        let run = |seed: u64| {
            let s = SeededSampler::new(SamplerConfig {
                seed,
                ..config(1.0, 1.0, 0)
            });
            let logits = Tensor::from_vec(vec![0.0f32; 64], 64, &mistralrs::Device::Cpu).unwrap();
            for len in 1..=20usize {
                s.apply(&logits, &vec![0u32; len]).unwrap();
            }
            s.records_from(0)
                .iter()
                .map(|c| c.token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));

        let s = SeededSampler::new(config(0.0, 1.0, 0));
        let first = Tensor::from_vec(vec![0.0f32, 5.0, 1.0], 3, &mistralrs::Device::Cpu).unwrap();
        let masked = Tensor::from_vec(
            vec![0.0f32, f32::NEG_INFINITY, 1.0],
            3,
            &mistralrs::Device::Cpu,
        )
        .unwrap();
        let out = s.apply(&first, &[9, 9]).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out, vec![f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY]);
        s.apply(&masked, &[9, 9]).unwrap();
        assert_eq!(s.count(), 1);
        assert_eq!(s.records_from(0)[0].token, 2);
        let out = s
            .apply(&first, &[9, 9, 2])
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(out[1], 2.0, "the second step's marker");
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn step_markers_survive_the_engines_f32_log10() {
        for step in (0..100_000usize).step_by(7) {
            let reported = step_marker(step).log(10.0);
            assert_eq!(step_of_reported_logprob(reported), Some(step), "{step}");
        }
        assert_eq!(step_of_reported_logprob(f32::NAN), None);
        assert_eq!(step_of_reported_logprob(f32::NEG_INFINITY), None);
    }
}
