//! Start-up, as named steps: check the flags, pin the model's bytes, build and check the
//! measured config, record it in the TEE, create the attested identity, load the engine,
//! then serve. Each step fails with the reason the operator needs, before anything is
//! served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cocoon_attestation::event_log::RuntimeEventLog;
use cocoon_attestation::ratls::SubjectAltName;
use tracing::info;

use crate::cli::{CollectorArgs, GpuArgs, ModelArgs, ServeArgs, TeeArgs};
use crate::config::{MeasuredConfig, ModelIdentity, Receipts, Runtime};
use crate::engine::generate::end_of_text_markers;
use crate::engine::{Engine, ModelSource, PreparedModel};
use crate::escrow::Escrows;
use crate::gpu::{GpuAttestation, GpuChoice, GpuInventory, GpuSystem};
use crate::http::server::{serve, serve_internal, SocketLimits};
use crate::http::state::{Admission, AppState, HostToken};
use crate::identity::GuestIdentity;
use crate::meter::Meter;
use crate::tee::{ConfigRegister, EvidenceProvider, SelectOptions};
use crate::watchdog::EngineWatchdog;

/// The measured config `cocoon-guest serve` would run under with these flags, computed
/// without a TEE and without starting anything (`cocoon-guest measured-config`): the
/// model is hashed where it is (so the disk's verity check is skipped), and the
/// environment is the image's, which sets no measured variable (cocoon-init starts the
/// guest with only HOME). A publisher lists the digest in the image manifest.
pub fn predicted_config(args: &ServeArgs) -> anyhow::Result<MeasuredConfig> {
    check_flags(args)?;
    let (source, model_id) = model_source(&args.model)?;
    let sha256 = crate::engine::digest_in_place(&source)?;
    let collector = args.collector.host_token_file.is_some();
    let config = config_of(args, &source, &model_id, &sha256, collector, [])?;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// Runs `cocoon-guest serve` until `shutdown` resolves.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Checked first: a weak token is refused before anything slow happens.
    let host_token = read_host_token(&args.collector)?;
    check_flags(&args)?;
    let (source, model_id) = model_source(&args.model)?;
    let prepared = prepare_model(&args.model, &source, &model_id)?;
    let config = measured_config(&args, &source, &model_id, &prepared, host_token.is_some())?;
    config.validate().map_err(anyhow::Error::msg)?;
    let digest = config.digest();
    let (tee, event_log) = record_config(&args.tee, &digest)?;
    let gpu = open_gpu(&args.gpu, config.gpu.as_ref())?;
    let meter = Meter::new(
        config.prices.clone(),
        config.model.sha256_bytes()?,
        config.receipts.journal_capacity,
        config.accounts.max_accounts,
    )?;
    // Only GPUs in CC mode are attested (not `--gpu nvidia-unattested`).
    let attested_gpu = gpu
        .as_ref()
        .filter(|_| config.gpu.as_ref().is_some_and(|g| g.confidential));
    let identity = create_identity(
        &args,
        tee.as_ref(),
        &digest,
        &event_log,
        &meter,
        attested_gpu,
    )?;
    if let Some(gpu) = attested_gpu {
        // Attested and bound: now the GPUs may take work (CC mode refuses it before).
        crate::gpu::set_ready(gpu.system.as_ref())?;
        info!("GPU ready state set: every GPU check passed");
    }
    let escrows = Escrows::new(
        &config.billing,
        &config.prices,
        meter.public_key(),
        cocoon_billing::escrow_code(),
    )
    .map_err(anyhow::Error::msg)?
    .map(Arc::new);
    if escrows.is_some() && host_token.is_none() {
        anyhow::bail!(
            "--payout-address needs the host agent's internal API (--host-token-file): \
             without it no escrow state arrives and no voucher is collected"
        );
    }
    let limits = &config.limits;
    // With GPUs, the KV cache is sized from the free memory of the GPU with the least of
    // it, read by the checks before the weights were loaded (the plan subtracts them).
    let gpu_free_bytes = gpu.as_ref().and_then(|g| g.inventory.least_free_memory());
    let kv_plan = crate::kv::KvPlan::for_model(limits, prepared.source(), gpu_free_bytes)
        .map_err(anyhow::Error::msg)?;
    if let Some(tokens) = kv_plan.capacity_tokens() {
        info!("KV cache: {tokens} tokens ({:?} blocks)", kv_plan.blocks);
    }
    let (engine, end_of_text) = load_engine(
        prepared,
        &model_id,
        limits.max_concurrent_requests,
        &kv_plan,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        engine,
        admission: Admission::new(limits.max_concurrent_requests, limits.max_queued_requests),
        kv: crate::kv::KvAdmission::new(&kv_plan, Duration::from_secs(limits.kv_wait_secs)),
        evidence_slots: tokio::sync::Semaphore::new(limits.max_concurrent_evidence),
        watchdog: EngineWatchdog::new(Duration::from_secs(limits.engine_stall_secs)),
        config,
        tee,
        spki_der: identity.spki_der.clone(),
        gpu: identity.gpu.clone(),
        config_digest: digest,
        event_log,
        meter,
        escrows,
        host_token,
        end_of_text,
    });
    if args.registry.registry.is_some() {
        // Informational: fresh evidence for our own image value, then a background lookup.
        match state.tee.attest(&[0u8; 64]) {
            Ok(evidence) => crate::registry_check::spawn(
                &args.registry,
                crate::registry_check::own_values(&evidence, &state.config),
            ),
            Err(e) => tracing::warn!("--registry: no evidence to compute the image value ({e})"),
        }
    }
    if state.tee.simulated() {
        tracing::warn!("evidence is SIMULATED (development root): this guest proves nothing about confidentiality");
    }
    if state.host_token.is_some() {
        start_internal_listener(args.collector.internal_listen, &state).await?;
    }
    // One line on stdout that scripts wait for.
    println!(
        "cocoon-guest: listening on https://{local} model={model_id} certificate-sha256={}",
        identity.certificate_sha256()
    );
    let limits = &state.config.limits;
    let socket_limits = SocketLimits {
        max_connections: limits.max_connections,
        handshake_timeout: Duration::from_secs(limits.handshake_timeout_secs),
        header_read_timeout: Duration::from_secs(limits.header_read_timeout_secs),
        write_stall_timeout: Duration::from_secs(limits.stream_stall_timeout_secs),
    };
    let tls = identity.server_config.clone();
    serve(listener, tls, state, socket_limits, shutdown).await;
    Ok(())
}

/// The host token from `--host-token-file`, refused if it is easy to guess.
fn read_host_token(collector: &CollectorArgs) -> anyhow::Result<Option<HostToken>> {
    let Some(path) = &collector.host_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --host-token-file {}", path.display()))?;
    let token = HostToken::new(&text)
        .map_err(|e| anyhow::anyhow!("--host-token-file {}: {e}", path.display()))?;
    Ok(Some(token))
}

/// The flags checked before the model is touched.
fn check_flags(args: &ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.collector.max_uncollected_receipts >= 1,
        "--max-uncollected-receipts must be at least 1"
    );
    anyhow::ensure!(
        args.limits.max_evidence_per_connection >= 1,
        "--max-evidence-per-connection must be at least 1"
    );
    Ok(())
}

/// The model's source and the id clients name it by.
fn model_source(model: &ModelArgs) -> anyhow::Result<(ModelSource, String)> {
    let source = ModelSource::from_path(&model.model)?;
    let model_id = model
        .model_id
        .clone()
        .unwrap_or_else(|| source.default_id());
    if let Some(root) = &model.model_verity_root {
        anyhow::ensure!(
            root.len() == 64 && root.bytes().all(|b| b.is_ascii_hexdigit()),
            "--model-verity-root must be a 32-byte hex dm-verity root hash"
        );
    }
    Ok((source, model_id))
}

/// Hashes exactly what the engine will load: a private in-memory copy, or the model in
/// place on a dm-verity device proven to have the configured root hash.
fn prepare_model(
    model: &ModelArgs,
    source: &ModelSource,
    model_id: &str,
) -> anyhow::Result<PreparedModel> {
    let started = Instant::now();
    let prepared = match &model.model_verity_root {
        Some(root) => PreparedModel::in_place_on_verity(source, root)?,
        None => PreparedModel::stage(source, &model.model_staging_dir)?,
    };
    info!(
        model = %model_id,
        sha256 = %prepared.sha256(),
        staged = prepared.staging_dir().is_some(),
        "hashed the model in {:.1?}",
        started.elapsed()
    );
    Ok(prepared)
}

/// The measured config this guest serves under.
fn measured_config(
    args: &ServeArgs,
    source: &ModelSource,
    model_id: &str,
    prepared: &PreparedModel,
    collector: bool,
) -> anyhow::Result<MeasuredConfig> {
    // vars_os: a non-UTF-8 variable must not panic the guest (its invalid bytes are
    // measured as U+FFFD).
    let environment = std::env::vars_os().map(|(n, v)| {
        (
            n.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    config_of(
        args,
        source,
        model_id,
        prepared.sha256(),
        collector,
        environment,
    )
}

/// The measured config of `serve` with these flags, a model of digest `model_sha256`
/// and this environment.
fn config_of(
    args: &ServeArgs,
    source: &ModelSource,
    model_id: &str,
    model_sha256: &str,
    collector: bool,
    environment: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<MeasuredConfig> {
    Ok(MeasuredConfig {
        version: 1,
        model: ModelIdentity {
            id: model_id.to_string(),
            format: source.format().into(),
            sha256: model_sha256.to_string(),
            verity_root: args
                .model
                .model_verity_root
                .as_ref()
                .map(|r| r.to_ascii_lowercase()),
        },
        sampling: args.sampling.clone(),
        limits: args.limits.clone(),
        prices: args.prices.table(),
        billing: args.billing.clone(),
        accounts: args.accounts.clone(),
        receipts: Receipts {
            journal_capacity: if collector {
                args.collector.max_uncollected_receipts
            } else {
                0
            },
            internal_listen: collector.then(|| args.collector.internal_listen.to_string()),
        },
        runtime: Runtime {
            listen: args.listen.to_string(),
            subject_alt_names: args.subject_alt_names.clone(),
            cert_validity_hours: args.cert_validity_hours,
            environment: Runtime::measured_environment(environment).map_err(anyhow::Error::msg)?,
        },
        gpu: args.gpu.requirement(),
    })
}

/// The boot measurements a simulated TEE reports (`--simulated-measurements`).
#[cfg(feature = "simulated")]
fn simulated_boot(tee_args: &TeeArgs) -> anyhow::Result<cocoon_attestation_dev::SimulatedBoot> {
    let Some(path) = &tee_args.simulated_measurements else {
        return Ok(Default::default());
    };
    let read = || -> anyhow::Result<cocoon_attestation_dev::SimulatedBoot> {
        let manifest = cocoon_attestation::manifest::Manifest::from_json(&std::fs::read(path)?)?;
        Ok(cocoon_attestation_dev::SimulatedBoot::from_manifest(
            &manifest,
        )?)
    };
    read().with_context(|| format!("--simulated-measurements {}", path.display()))
}

/// Chooses the evidence backend and records the measured config in the TEE before
/// anything is served; the identity checks its own evidence against it
/// (`tee::self_check`). Returns the backend and the runtime event log.
fn record_config(
    tee_args: &TeeArgs,
    digest: &[u8; 48],
) -> anyhow::Result<(Box<dyn EvidenceProvider>, Vec<u8>)> {
    let options = SelectOptions {
        #[cfg(feature = "simulated")]
        simulated_debug: tee_args.simulated_debug,
        #[cfg(feature = "simulated")]
        simulated_snp_without_certificates: tee_args.simulated_snp_without_certificates,
        #[cfg(feature = "simulated")]
        simulated_boot: simulated_boot(tee_args)?,
        vtpm: tee_args.vtpm.clone(),
        vtpm_pcrs: tee_args.vtpm_pcrs.clone(),
        ..SelectOptions::new(*digest)
    };
    let tee = crate::tee::select(tee_args.tee, &options)
        .context("choosing the evidence backend (--tee)")?;
    let event_log = match tee.extend_config_register(digest)? {
        ConfigRegister::TdxRtmr(register) => RuntimeEventLog::config(register, digest).to_cbor()?,
        ConfigRegister::None => Vec::new(),
        ConfigRegister::Vtpm { rtmr, pcr } => {
            RuntimeEventLog::config_in(rtmr, Some(pcr), digest).to_cbor()?
        }
    };
    info!(config_sha384 = %hex::encode(digest), "measured config recorded");
    Ok((tee, event_log))
}

/// The GPUs the config requires, reached and checked before anything else touches them.
struct OpenGpu {
    system: Box<dyn GpuSystem>,
    inventory: GpuInventory,
    /// The roots the guest checks its own GPU evidence against (as clients will).
    roots: Vec<cocoon_attestation::gpu::GpuRoot>,
}

/// Runs the GPU checks up to the evidence (`--gpu`): with a GPU configured and any check
/// failing, the guest stops here, naming the check.
fn open_gpu(
    args: &GpuArgs,
    required: Option<&crate::gpu::GpuRequirement>,
) -> anyhow::Result<Option<OpenGpu>> {
    let Some(required) = required else {
        return Ok(None);
    };
    // The production build has no development GPU, so nothing is added to NVIDIA's roots.
    #[cfg_attr(not(feature = "simulated"), allow(unused_mut))]
    let mut roots = cocoon_attestation::gpu::nvidia_device_roots();
    let system: Box<dyn GpuSystem> = match args.gpu {
        GpuChoice::None => return Ok(None),
        GpuChoice::Nvidia | GpuChoice::NvidiaUnattested => {
            match crate::gpu::nvml::NvmlSystem::open() {
                Ok(nvml) => Box::new(nvml),
                Err(e) => {
                    return Err(crate::Error::Gpu {
                        check: crate::gpu::GpuCheck::Driver.name(),
                        detail: e.to_string(),
                    }
                    .into())
                }
            }
        }
        #[cfg(feature = "simulated")]
        GpuChoice::Simulated => {
            roots.push(cocoon_attestation_dev::DevGpuPki::dev()?.root());
            Box::new(crate::gpu::simulated::SimulatedGpu::new(
                args.simulated_gpu_fault,
            )?)
        }
    };
    let inventory = crate::gpu::check_before_evidence(system.as_ref(), required)?;
    for device in &inventory.devices {
        info!(
            index = device.index,
            name = %device.name,
            free_bytes = device.memory.free,
            total_bytes = device.memory.total,
            driver = %inventory.driver_version,
            "GPU: CC mode on, developer tools off, protected PCIe {}",
            if inventory.cc.protected_pcie { "on" } else { "off" }
        );
    }
    #[cfg(feature = "simulated")]
    if args.gpu == GpuChoice::Simulated {
        tracing::warn!("the GPU is SIMULATED (development PKI): its evidence proves nothing");
    }
    Ok(Some(OpenGpu {
        system,
        inventory,
        roots,
    }))
}

/// The TLS identity whose certificate carries evidence over its key, the config digest,
/// the receipt key and, with GPUs, the digest of their evidence for that key.
fn create_identity(
    args: &ServeArgs,
    tee: &dyn EvidenceProvider,
    digest: &[u8; 48],
    event_log: &[u8],
    meter: &Meter,
    gpu: Option<&OpenGpu>,
) -> anyhow::Result<GuestIdentity> {
    let gpu_source = gpu.map(|gpu| {
        move |spki: &[u8]| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            GpuAttestation::collect(gpu.system.as_ref(), &gpu.inventory, spki, &gpu.roots, now)
        }
    });
    let names: Vec<SubjectAltName> = args
        .subject_alt_names
        .iter()
        .map(|s| SubjectAltName::parse(s))
        .collect();
    Ok(GuestIdentity::create(
        tee,
        digest,
        event_log,
        &meter.public_key(),
        &names,
        time::Duration::hours(i64::from(args.cert_validity_hours)),
        gpu_source
            .as_ref()
            .map(|f| f as &dyn Fn(&[u8]) -> crate::Result<GpuAttestation>),
    )?)
}

/// Loads the engine and reads its tokenizer's end-of-text markers.
async fn load_engine(
    prepared: PreparedModel,
    model_id: &str,
    max_concurrent_requests: usize,
    kv_plan: &crate::kv::KvPlan,
) -> anyhow::Result<(Engine, Vec<String>)> {
    let started = Instant::now();
    let engine = Engine::load(
        prepared,
        model_id.to_string(),
        max_concurrent_requests,
        kv_plan.engine_cache(),
    )
    .await?;
    info!(model = %model_id, "model loaded in {:.1?}", started.elapsed());
    let end_of_text = end_of_text_markers(&engine.model)
        .await
        .map_err(|e| anyhow::anyhow!("reading the tokenizer's end-of-text tokens: {e}"))?;
    Ok((engine, end_of_text))
}

/// Binds the internal API's listener and serves it in the background.
async fn start_internal_listener(address: SocketAddr, state: &Arc<AppState>) -> anyhow::Result<()> {
    let internal = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on --internal-listen {address}"))?;
    let internal_addr = internal.local_addr()?;
    // Printed before the line scripts wait for, so they have both when it comes.
    println!("cocoon-guest: internal API on http://{internal_addr}");
    let header_read_timeout = Duration::from_secs(state.config.limits.header_read_timeout_secs);
    tokio::spawn(serve_internal(internal, state.clone(), header_read_timeout));
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
