//! The KV cache's capacity, and admission by it.
//!
//! Why: on a GPU, mistral.rs's PagedAttention KV cache is a fixed number of blocks of
//! `block_tokens` tokens. When the sequences it runs need more blocks than it holds, the
//! engine does not queue them: it dies (`CUDA_ERROR_ILLEGAL_ADDRESS` in mistral.rs 0.8.1,
//! taking the server with it; `shared/design/GPU.md`). Counting requests does not bound
//! that (eight 4,000-token requests need 64 times the KV of eight 60-token ones), so the
//! guest sizes the cache itself and admits by KV, so that the engine never holds more
//! tokens than its cache:
//!
//! - [`KvGeometry`]: what one token of KV costs, read from the model the engine loads
//!   (`config.json` of a directory, the `<arch>.*` metadata of a GGUF file);
//! - [`KvPlan`]: the capacity in blocks, from `--kv-cache-tokens` or, on a GPU, from its
//!   free memory × `--kv-cache-gpu-utilization` less the weights and a headroom, rounded
//!   to blocks **exactly** as mistral.rs 0.8.1 rounds `MemoryGpuConfig::ContextSize`
//!   (`paged_attention/mod.rs`: `ctxt_to_blocks!` in bytes, floored to whole MiB, then
//!   `mb_to_blocks!`), and the `ContextSize` the engine is given, so the blocks the guest
//!   counts are the blocks the engine allocates;
//! - [`KvAdmission`]: every request reserves, before it reaches the engine, the blocks its
//!   worst case needs (`ceil((prompt + max_tokens) / block_tokens)` for each sequence),
//!   waits for them in arrival order for a bounded time, and holds them until its
//!   generation ends. A request that could never fit is refused outright.
//!
//! Without a GPU and without `--kv-cache-tokens` there is no bound (the CPU engine grows
//! its cache as needed), as before. With `--kv-cache-tokens` on a CPU, the bound is
//! `floor(tokens / block_tokens)` blocks of tokens in flight (no engine cache to match).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::gguf_file;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::engine::{EngineKvCache, ModelSource};

/// Tokens per KV block: mistral.rs's `DEFAULT_PAGED_ATTENTION_BLOCK_SIZE` (it supports 8,
/// 16 and 32), passed to it explicitly.
pub const KV_BLOCK_TOKENS: usize = 32;

/// GPU memory left outside the KV cache and the weights, for activations, the CUDA
/// context and cuBLAS workspaces, in bytes.
pub const KV_GPU_HEADROOM_BYTES: u64 = 1 << 30;

const MIB: u64 = 1024 * 1024;

/// What one token of KV cache costs in a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    /// Transformer layers (each keeps K and V).
    pub layers: usize,
    /// Key/value heads (fewer than attention heads with grouped-query attention).
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Bytes per element of the cache (the model's dtype: 2 for bf16/f16).
    pub dtype_bytes: usize,
    /// Tokens per block.
    pub block_tokens: usize,
}

impl KvGeometry {
    /// Bytes of K and V for one token over all layers:
    /// `2 × layers × kv_heads × head_dim × dtype_bytes`.
    pub fn bytes_per_token(&self) -> u64 {
        2 * (self.layers * self.kv_heads * self.head_dim * self.dtype_bytes) as u64
    }

    /// The blocks mistral.rs 0.8.1 allocates for `MemoryGpuConfig::ContextSize(tokens)`:
    /// `ctxt_to_blocks!` (bytes) floored to whole MiB, then `mb_to_blocks!`, each division
    /// in its order.
    pub fn engine_blocks(&self, tokens: usize) -> usize {
        let elements_per_token = (2 * self.kv_heads * self.head_dim) as u64;
        let bytes =
            tokens as u64 * self.dtype_bytes as u64 * self.layers as u64 * elements_per_token;
        let mb = bytes / MIB;
        let blocks = mb * MIB
            / self.dtype_bytes as u64
            / self.block_tokens as u64
            / self.layers as u64
            / elements_per_token;
        usize::try_from(blocks).unwrap_or(usize::MAX)
    }

    /// From a Hugging Face `config.json`: `num_hidden_layers`, `num_key_value_heads`
    /// (default `num_attention_heads`), `head_dim` (default `hidden_size /
    /// num_attention_heads`), `torch_dtype` or `dtype` (default bf16).
    pub fn from_hf_config(config: &Value) -> Result<Self, String> {
        // Multimodal configs nest the language model's.
        let config = config
            .get("text_config")
            .filter(|c| c.is_object())
            .unwrap_or(config);
        let field = |name: &str| {
            config
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
        };
        let need = |name: &str| field(name).ok_or(format!("config.json has no {name}"));
        let layers = need("num_hidden_layers")?;
        let heads = need("num_attention_heads")?;
        let kv_heads = field("num_key_value_heads").unwrap_or(heads);
        let head_dim = match field("head_dim") {
            Some(d) => d,
            None => need("hidden_size")? / heads,
        };
        let dtype = config
            .get("torch_dtype")
            .or_else(|| config.get("dtype"))
            .and_then(Value::as_str)
            .unwrap_or("bfloat16");
        let dtype_bytes = match dtype {
            "bfloat16" | "float16" | "bf16" | "f16" | "half" => 2,
            "float32" | "f32" | "float" => 4,
            other => {
                return Err(format!(
                    "config.json dtype {other:?} is not one the engine runs"
                ))
            }
        };
        Self::checked(layers, kv_heads, head_dim, dtype_bytes)
    }

    /// From GGUF metadata: `general.architecture`, then `<arch>.block_count`,
    /// `<arch>.attention.head_count_kv` (default `head_count`),
    /// `<arch>.attention.key_length` (default `embedding_length / head_count`). The cache
    /// dtype is not in the file (the weights are quantized): 2 bytes, the bf16/f16 mistral.rs
    /// runs GGUF models in on a GPU.
    pub fn from_gguf_metadata(
        metadata: &HashMap<String, gguf_file::Value>,
    ) -> Result<Self, String> {
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or("no general.architecture")?;
        let field = |key: &str| {
            metadata
                .get(&format!("{arch}.{key}"))
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
        };
        let need = |key: &str| field(key).ok_or(format!("no {arch}.{key}"));
        let layers = need("block_count")?;
        let heads = need("attention.head_count")?;
        let kv_heads = field("attention.head_count_kv").unwrap_or(heads);
        let head_dim = match field("attention.key_length") {
            Some(d) => d,
            None => need("embedding_length")? / heads,
        };
        Self::checked(layers, kv_heads, head_dim, 2)
    }

    /// The geometry of the model at `source` (read from the files the engine loads).
    pub fn of_model(source: &ModelSource) -> Result<Self, String> {
        match source {
            ModelSource::Gguf { dir, file } => {
                let path = dir.join(file);
                let file =
                    std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let content = gguf_file::Content::read(&mut std::io::BufReader::new(file))
                    .map_err(|e| format!("{}: GGUF metadata: {e}", path.display()))?;
                Self::from_gguf_metadata(&content.metadata)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            ModelSource::HfDir(dir) => {
                let path = dir.join("config.json");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let json: Value =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                Self::from_hf_config(&json).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }

    fn checked(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        dtype_bytes: usize,
    ) -> Result<Self, String> {
        if head_dim == 0 {
            return Err("head dimension is 0".into());
        }
        Ok(Self {
            layers,
            kv_heads,
            head_dim,
            dtype_bytes,
            block_tokens: KV_BLOCK_TOKENS,
        })
    }
}

/// Bytes of the model's weights as stored (the GGUF file; a directory's `*.safetensors`,
/// `*.bin`, `*.pth`, `*.pt`), which the GPU holds beside the KV cache.
pub fn weight_bytes(source: &ModelSource) -> u64 {
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    match source {
        ModelSource::Gguf { dir, file } => size(&dir.join(file)),
        ModelSource::HfDir(dir) => std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "safetensors" | "bin" | "pth" | "pt"))
                    })
                    .map(|p| size(&p))
                    .sum()
            })
            .unwrap_or(0),
    }
}

/// The GPU the KV cache lives on, as the guest sees it before loading the model.
#[derive(Debug, Clone, Copy)]
pub struct GpuMemory {
    /// Free bytes on the device now.
    pub free_bytes: u64,
    /// Share of the free memory the weights and the KV cache may take
    /// (`--kv-cache-gpu-utilization`).
    pub utilization: f64,
    /// The model's weights ([`weight_bytes`]).
    pub weight_bytes: u64,
}

/// The KV cache's size: what admission counts and what the engine is told to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPlan {
    /// Blocks the cache holds (`None`: no bound).
    pub blocks: Option<usize>,
    /// Tokens per block.
    pub block_tokens: usize,
    /// `MemoryGpuConfig::ContextSize` to give mistral.rs's PagedAttention (`None`: the
    /// engine runs without it, as on a CPU); it yields exactly [`Self::blocks`].
    pub engine_context_tokens: Option<usize>,
}

impl KvPlan {
    /// The cache the engine is given (`None`: it runs without PagedAttention).
    pub fn engine_cache(&self) -> Option<EngineKvCache> {
        self.engine_context_tokens
            .map(|context_tokens| EngineKvCache {
                block_tokens: self.block_tokens,
                context_tokens,
            })
    }

    /// No bound: the CPU default.
    pub fn unbounded() -> Self {
        Self {
            blocks: None,
            block_tokens: KV_BLOCK_TOKENS,
            engine_context_tokens: None,
        }
    }

    /// The plan for a model of `geometry` (`Err` text: why it is unknown), an explicit
    /// `--kv-cache-tokens`, and the GPU (`None`: no GPU, no paged cache in the engine).
    pub fn new(
        geometry: Result<KvGeometry, String>,
        explicit_tokens: Option<usize>,
        gpu: Option<GpuMemory>,
    ) -> Result<Self, String> {
        let Some(gpu) = gpu else {
            return Ok(match explicit_tokens {
                None => Self::unbounded(),
                Some(tokens) => {
                    let blocks = tokens / KV_BLOCK_TOKENS;
                    if blocks == 0 {
                        return Err(format!(
                            "--kv-cache-tokens {tokens} is less than one block of {KV_BLOCK_TOKENS} tokens"
                        ));
                    }
                    Self {
                        blocks: Some(blocks),
                        block_tokens: KV_BLOCK_TOKENS,
                        engine_context_tokens: None,
                    }
                }
            });
        };
        let geometry = geometry.map_err(|e| {
            format!(
                "cannot size the GPU KV cache: the model's KV geometry is unknown ({e}); \
                 pass --kv-cache-tokens"
            )
        })?;
        let tokens = match explicit_tokens {
            Some(tokens) => tokens,
            None => {
                let budget = (gpu.free_bytes as f64 * gpu.utilization) as u64;
                let left = budget
                    .saturating_sub(gpu.weight_bytes)
                    .saturating_sub(KV_GPU_HEADROOM_BYTES);
                usize::try_from(left / geometry.bytes_per_token()).unwrap_or(usize::MAX)
            }
        };
        let blocks = geometry.engine_blocks(tokens);
        if blocks == 0 {
            return Err(format!(
                "the GPU KV cache would hold no block of {} tokens ({tokens} tokens at {} bytes \
                 each; {} bytes free × {} utilization, {} bytes of weights, {} of headroom): \
                 lower the model size or raise --kv-cache-gpu-utilization or --kv-cache-tokens",
                geometry.block_tokens,
                geometry.bytes_per_token(),
                gpu.free_bytes,
                gpu.utilization,
                gpu.weight_bytes,
                KV_GPU_HEADROOM_BYTES
            ));
        }
        Ok(Self {
            blocks: Some(blocks),
            block_tokens: geometry.block_tokens,
            engine_context_tokens: Some(tokens),
        })
    }

    /// Tokens the cache holds (`None`: no bound).
    pub fn capacity_tokens(&self) -> Option<usize> {
        self.blocks.map(|b| b * self.block_tokens)
    }

    /// The plan the limits ask for, for the model at `source` (the copy the engine
    /// loads) and the GPU's free memory in bytes (`None`: no GPU).
    pub fn for_model(
        limits: &crate::config::Limits,
        source: &ModelSource,
        gpu_free_bytes: Option<u64>,
    ) -> Result<Self, String> {
        let gpu = gpu_free_bytes.map(|free_bytes| GpuMemory {
            free_bytes,
            utilization: limits.kv_cache_gpu_utilization,
            weight_bytes: weight_bytes(source),
        });
        let geometry = match (gpu, limits.kv_cache_tokens) {
            // Neither needs it: no engine cache to match.
            (None, _) => Err("no GPU".to_string()),
            _ => KvGeometry::of_model(source),
        };
        Self::new(geometry, limits.kv_cache_tokens, gpu)
    }
}

/// Why a request got no KV reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRefusal {
    /// Its worst case is more than the whole cache: it can never run.
    NeverFits {
        /// Tokens its sequences may hold at most (rounded up to blocks per sequence).
        needed_tokens: usize,
        capacity_tokens: usize,
    },
    /// The cache stayed too full for the whole wait.
    Busy { waited_secs: u64 },
    /// The server is shutting down.
    Closed,
}

/// Admission by KV capacity: blocks reserved per request, in arrival order (tokio's
/// semaphore is fair: a large request at the head is not overtaken by small ones).
pub struct KvAdmission {
    /// `None`: no bound.
    blocks: Option<Arc<Semaphore>>,
    total_blocks: usize,
    block_tokens: usize,
    wait: Duration,
}

/// Blocks held for one request until it is dropped (its generation ended, however).
#[derive(Debug)]
pub struct KvReservation {
    _permit: Option<OwnedSemaphorePermit>,
    blocks: usize,
}

impl KvReservation {
    /// Blocks held.
    pub fn blocks(&self) -> usize {
        self.blocks
    }
}

impl KvAdmission {
    /// Admission for `plan`; a request waits at most `wait` for its blocks.
    pub fn new(plan: &KvPlan, wait: Duration) -> Self {
        let total_blocks = plan.blocks.unwrap_or(0);
        Self {
            blocks: plan
                .blocks
                .map(|b| Arc::new(Semaphore::new(b.min(Semaphore::MAX_PERMITS)))),
            total_blocks,
            block_tokens: plan.block_tokens,
            wait,
        }
    }

    /// Blocks the whole cache holds (`None`: no bound).
    pub fn blocks_total(&self) -> Option<usize> {
        self.blocks.as_ref().map(|_| self.total_blocks)
    }

    /// Blocks reserved now.
    pub fn blocks_reserved(&self) -> usize {
        self.blocks
            .as_ref()
            .map(|s| self.total_blocks.saturating_sub(s.available_permits()))
            .unwrap_or(0)
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// Tokens the cache holds (`None`: no bound).
    pub fn capacity_tokens(&self) -> Option<usize> {
        self.blocks_total().map(|b| b * self.block_tokens)
    }

    /// Blocks for sequences of at most these many tokens each.
    pub fn blocks_for(&self, sequence_tokens: &[usize]) -> usize {
        sequence_tokens
            .iter()
            .map(|t| t.div_ceil(self.block_tokens))
            .fold(0usize, usize::saturating_add)
    }

    /// Reserves the blocks of sequences of at most `sequence_tokens` tokens each, waiting
    /// in arrival order until `deadline` or the admission's wait, whichever is sooner.
    pub async fn reserve(
        &self,
        sequence_tokens: &[usize],
        deadline: Instant,
    ) -> Result<KvReservation, KvRefusal> {
        let Some(semaphore) = &self.blocks else {
            return Ok(KvReservation {
                _permit: None,
                blocks: 0,
            });
        };
        let needed = self.blocks_for(sequence_tokens);
        if needed > self.total_blocks {
            return Err(KvRefusal::NeverFits {
                needed_tokens: needed.saturating_mul(self.block_tokens),
                capacity_tokens: self.total_blocks * self.block_tokens,
            });
        }
        let count = u32::try_from(needed).map_err(|_| KvRefusal::NeverFits {
            needed_tokens: usize::MAX,
            capacity_tokens: self.total_blocks * self.block_tokens,
        })?;
        // A zero wait still polls once: the request joins the queue in order, and gets the
        // blocks if they are free and nobody is ahead of it.
        let until = deadline.min(Instant::now() + self.wait);
        match tokio::time::timeout_at(until, semaphore.clone().acquire_many_owned(count)).await {
            Ok(Ok(permit)) => Ok(KvReservation {
                _permit: Some(permit),
                blocks: needed,
            }),
            Ok(Err(_)) => Err(KvRefusal::Closed),
            Err(_) => Err(KvRefusal::Busy {
                waited_secs: self.wait.as_secs(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_3_8b() -> KvGeometry {
        KvGeometry::from_hf_config(&serde_json::json!({
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "hidden_size": 4096,
            "torch_dtype": "bfloat16",
        }))
        .unwrap()
    }

    #[test]
    fn kv_geometry_of_a_llama_3_8b_config() {
        let g = llama_3_8b();
        assert_eq!(
            g,
            KvGeometry {
                layers: 32,
                kv_heads: 8,
                head_dim: 128,
                dtype_bytes: 2,
                block_tokens: 32
            }
        );
        assert_eq!(g.bytes_per_token(), 131_072);
        // Defaults: no num_key_value_heads (multi-head attention), explicit head_dim,
        // float32, nested text_config.
        let mha = KvGeometry::from_hf_config(&serde_json::json!({"text_config": {
            "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16,
            "hidden_size": 100, "dtype": "float32"}}))
        .unwrap();
        assert_eq!((mha.kv_heads, mha.head_dim, mha.dtype_bytes), (4, 16, 4));
        let missing = KvGeometry::from_hf_config(&serde_json::json!({"num_attention_heads": 4}));
        assert!(missing.unwrap_err().contains("num_hidden_layers"));
        let odd = KvGeometry::from_hf_config(&serde_json::json!({
            "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
            "torch_dtype": "int8"}));
        assert!(odd.is_err());
    }

    #[test]
    fn kv_geometry_of_gguf_metadata() {
        use gguf_file::Value as V;
        let metadata: HashMap<String, V> = [
            ("general.architecture", V::String("llama".into())),
            ("llama.block_count", V::U32(30)),
            ("llama.attention.head_count", V::U32(9)),
            ("llama.attention.head_count_kv", V::U32(3)),
            ("llama.embedding_length", V::U32(576)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let g = KvGeometry::from_gguf_metadata(&metadata).unwrap();
        assert_eq!(
            (g.layers, g.kv_heads, g.head_dim, g.dtype_bytes),
            (30, 3, 64, 2)
        );
        assert!(KvGeometry::from_gguf_metadata(&HashMap::new()).is_err());
    }

    /// mistral.rs's own arithmetic, spelled as its macros are.
    fn mistral_blocks(tokens: usize, g: &KvGeometry) -> usize {
        let (dtype, block, layers) = (g.dtype_bytes, g.block_tokens, g.layers);
        let elements = 2 * g.kv_heads * g.head_dim;
        let mem_gpu = tokens * dtype * layers * elements / (1024 * 1024);
        mem_gpu * 1024 * 1024 / dtype / block / layers / elements
    }

    #[test]
    fn kv_blocks_round_as_mistral_rs_context_size_does() {
        let g = llama_3_8b();
        // 4 MiB per 32-token block: whole blocks only.
        assert_eq!(g.engine_blocks(4096), 128);
        assert_eq!(g.engine_blocks(4095), 127);
        assert_eq!(g.engine_blocks(31), 0);
        // A geometry whose block is not a whole number of MiB loses the MiB remainder.
        let odd = KvGeometry {
            layers: 30,
            kv_heads: 3,
            head_dim: 64,
            dtype_bytes: 2,
            block_tokens: 32,
        };
        assert_eq!(odd.bytes_per_token(), 23_040);
        // 256 tokens = 5.625 MiB -> 5 MiB -> 7 blocks, not 8.
        assert_eq!(odd.engine_blocks(256), 7);
        for tokens in [0, 1, 31, 32, 33, 255, 256, 1000, 4096, 65_537, 1_000_000] {
            assert_eq!(
                odd.engine_blocks(tokens),
                mistral_blocks(tokens, &odd),
                "{tokens}"
            );
            assert_eq!(
                g.engine_blocks(tokens),
                mistral_blocks(tokens, &g),
                "{tokens}"
            );
        }
    }

    #[test]
    fn kv_plan_from_gpu_memory_explicit_tokens_or_nothing() {
        let g = llama_3_8b();
        assert_eq!(KvPlan::new(Ok(g), None, None).unwrap(), KvPlan::unbounded());
        // CPU with an explicit bound: whole blocks of tokens in flight, no engine cache.
        let cpu = KvPlan::new(Err("unknown".into()), Some(100), None).unwrap();
        assert_eq!((cpu.blocks, cpu.engine_context_tokens), (Some(3), None));
        assert_eq!(cpu.capacity_tokens(), Some(96));
        assert!(KvPlan::new(Ok(g), Some(31), None).is_err());
        // An 80 GB GPU with 79 GiB free, 0.85 of it, 14.96 GB of weights, 1 GiB headroom.
        let gpu = GpuMemory {
            free_bytes: 79 << 30,
            utilization: 0.85,
            weight_bytes: 14_960_000_000,
        };
        let plan = KvPlan::new(Ok(g), None, Some(gpu)).unwrap();
        let budget = ((79u64 << 30) as f64 * 0.85) as u64 - 14_960_000_000 - (1 << 30);
        let tokens = (budget / 131_072) as usize;
        assert_eq!(plan.engine_context_tokens, Some(tokens));
        assert_eq!(plan.blocks, Some(g.engine_blocks(tokens)));
        assert_eq!(plan.blocks, Some(tokens / 32));
        // Explicit tokens on a GPU: the engine is told exactly that many.
        let exact = KvPlan::new(Ok(g), Some(8192), Some(gpu)).unwrap();
        assert_eq!(
            (exact.blocks, exact.engine_context_tokens),
            (Some(256), Some(8192))
        );
        // Not enough memory, or no geometry: refused with the reason.
        let tiny = GpuMemory {
            free_bytes: 1 << 30,
            ..gpu
        };
        assert!(KvPlan::new(Ok(g), None, Some(tiny)).is_err());
        let unknown = KvPlan::new(Err("no config".into()), None, Some(gpu)).unwrap_err();
        assert!(unknown.contains("--kv-cache-tokens"), "{unknown}");
    }

    fn admission(blocks: usize, wait_ms: u64) -> KvAdmission {
        KvAdmission::new(
            &KvPlan {
                blocks: Some(blocks),
                block_tokens: 32,
                engine_context_tokens: None,
            },
            Duration::from_millis(wait_ms),
        )
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn kv_reservations_count_blocks_per_sequence_and_are_released_on_drop() {
        let kv = admission(10, 0);
        assert_eq!(kv.blocks_for(&[1, 32, 33]), 1 + 1 + 2);
        assert_eq!(kv.capacity_tokens(), Some(320));
        let a = kv.reserve(&[100, 100], far()).await.unwrap();
        assert_eq!((a.blocks(), kv.blocks_reserved()), (8, 8));
        // Two blocks left: a three-block request gets Busy after its (zero) wait.
        assert_eq!(
            kv.reserve(&[65], far()).await.unwrap_err(),
            KvRefusal::Busy { waited_secs: 0 }
        );
        let b = kv.reserve(&[64], far()).await.unwrap();
        assert_eq!(kv.blocks_reserved(), 10);
        drop(a);
        drop(b);
        assert_eq!(kv.blocks_reserved(), 0);
        // More than the whole cache: never.
        assert_eq!(
            kv.reserve(&[300, 30], far()).await.unwrap_err(),
            KvRefusal::NeverFits {
                needed_tokens: 352,
                capacity_tokens: 320
            }
        );
        // No bound: nothing counted.
        let free = KvAdmission::new(&KvPlan::unbounded(), Duration::ZERO);
        assert_eq!(free.blocks_total(), None);
        assert_eq!(free.reserve(&[1 << 40], far()).await.unwrap().blocks(), 0);
    }

    #[tokio::test]
    async fn kv_waiters_are_served_in_arrival_order() {
        let kv = Arc::new(admission(4, 60_000));
        let first = kv.reserve(&[128], far()).await.unwrap();
        // A big request queues first, then a small one: the small one must not overtake.
        let big = tokio::spawn({
            let kv = kv.clone();
            async move { kv.reserve(&[128], far()).await.map(|r| r.blocks()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let small = tokio::spawn({
            let kv = kv.clone();
            async move { kv.reserve(&[1], far()).await.map(|r| r.blocks()) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !small.is_finished(),
            "the small request overtook the big one"
        );
        drop(first);
        assert_eq!(big.await.unwrap(), Ok(4));
        assert_eq!(small.await.unwrap(), Ok(1));
        // The deadline bounds the wait as well.
        let hold = kv.reserve(&[128], far()).await.unwrap();
        let refused = kv
            .reserve(&[1], Instant::now() + Duration::from_millis(10))
            .await;
        assert!(matches!(refused, Err(KvRefusal::Busy { .. })));
        drop(hold);
    }
}
