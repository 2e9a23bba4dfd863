//! Ballista's scheduler and executor servers, started inside this process.
//!
//! Both use pull-staged scheduling: executors ask the scheduler for work, so the scheduler
//! never connects to an executor and each executor needs one port (its Arrow Flight server,
//! which clients and other executors fetch results and shuffle data from). Both servers bind
//! where they are told (127.0.0.1 unless the operator chooses otherwise) and advertise that
//! address, so every member of the cluster must be able to reach it.
//!
//! The servers run Ballista's default codecs. Both know every function the client's session
//! plans with ([`session_state`]): DataFusion's own, nested (array) functions included, which
//! Ballista's executor leaves out by default, and Quarry's (`cidr_match`); a plan naming a
//! function a server lacks fails there, so the three must agree. What an executor reads is
//! what the submitted plan names (see [`crate::remote`]); local paths must therefore be the
//! same on every executor (a shared filesystem, or all executors on the store's machine).
//! A fleet's bucket (`s3://`) is read through [`FleetObjects`] on both servers: only segments
//! its hosts' manifests vouch for, hash-checked, never written; each server takes endpoint
//! and credentials from its own AWS environment.
//! This module must not register any object store or function a plan could use to read
//! outside what the client names.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::objects::FleetObjects;
use crate::{FleetError, Result};

/// Runs a scheduler on `bind` until `shutdown` completes. `on_listening` is called with the
/// address it listens on once it accepts connections (the real port when `bind` has port 0).
pub async fn run_scheduler(
    bind: SocketAddr,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let server = |source| FleetError::Server {
        role: "scheduler",
        source,
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| FleetError::Io {
            path: PathBuf::from(bind.to_string()),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| FleetError::Io {
        path: PathBuf::from(bind.to_string()),
        source,
    })?;
    // The scheduler asks the size of each bucket segment a plan names (answered from the
    // manifests, nothing downloaded); its private directory is only for the registry's sake.
    let work = private_work_dir("quarry-scheduler-")?;
    let objects = Arc::new(FleetObjects::new(work.path()));
    let mut config = SchedulerConfig::default()
        .with_hostname(local.ip().to_string())
        .with_port(local.port())
        .with_scheduler_policy(TaskSchedulingPolicy::PullStaged);
    config.bind_host = local.ip().to_string();
    config.override_session_builder = Some(Arc::new(move |config| {
        let state = session_state(config)?;
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(objects.clone())
            .build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(state)
            .with_runtime_env(runtime)
            .build())
    }));
    config.validate().map_err(server)?;
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(server)?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(server)?;
    on_listening(local);
    tokio::select! {
        served = start_grpc_service_with_listener(listener, scheduler) => served.map_err(server),
        () = shutdown => Ok(()),
    }
}

/// Completes on SIGINT or SIGTERM: when `quarry fleet scheduler` stops.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How an executor joins a cluster.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host and port.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Where this executor's Flight server listens; also the address it advertises.
    pub bind: SocketAddr,
    /// Tasks run at once (Ballista's "vcores"); 0 means one per CPU.
    pub concurrent_tasks: usize,
    /// Seconds to keep retrying the first connection to the scheduler (0: fail at once).
    pub connect_timeout_secs: u16,
}

impl ExecutorOptions {
    /// The options of an executor of the scheduler at `scheduler` (`df://HOST:PORT` or
    /// `HOST:PORT`, as [`crate::remote::scheduler_url`] reads it).
    pub fn for_scheduler(
        scheduler: &str,
        bind: SocketAddr,
        concurrent_tasks: usize,
        connect_timeout_secs: u16,
    ) -> Result<ExecutorOptions> {
        let url = crate::remote::scheduler_url(scheduler)?;
        let bad = || FleetError::BadScheduler(scheduler.to_string());
        let (host, port) = url
            .trim_start_matches("df://")
            .rsplit_once(':')
            .ok_or_else(bad)?;
        Ok(ExecutorOptions {
            scheduler_host: host.to_string(),
            scheduler_port: port.parse().map_err(|_| bad())?,
            bind,
            concurrent_tasks,
            connect_timeout_secs,
        })
    }
}

/// Runs an executor until SIGINT or SIGTERM (Ballista's executor handles both: it tells the
/// scheduler it is leaving, finishes, and removes its shuffle files). Its work directory is
/// a private temporary directory removed when it returns.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let work = private_work_dir("quarry-executor-")?;
    // Checked copies of bucket segments: a directory of their own (Ballista cleans its work
    // directory by itself), removed with it.
    let copies = private_work_dir("quarry-executor-copies-")?;
    let objects = Arc::new(FleetObjects::new(copies.path()));
    let host = options.bind.ip().to_string();
    let config = ExecutorProcessConfig {
        bind_host: host.clone(),
        external_host: Some(host),
        port: options.bind.port(),
        // Unused with pull-staged scheduling (no executor gRPC server is started).
        grpc_port: options.bind.port(),
        scheduler_host: options.scheduler_host,
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: options.connect_timeout_secs,
        vcores: options.concurrent_tasks,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(work.path().to_string_lossy().into_owned()),
        print_thread_info: false,
        override_runtime_producer: Some(Arc::new(move |_config| {
            RuntimeEnvBuilder::new()
                .with_object_store_registry(objects.clone())
                .build_arc()
        })),
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(
            &session_state(SessionConfig::new()).map_err(|e| FleetError::Server {
                role: "executor",
                source: e.into(),
            })?,
        ))),
        ..ExecutorProcessConfig::default()
    };
    let result = start_executor_process(Arc::new(config))
        .await
        .map_err(|source| FleetError::Server {
            role: "executor",
            source,
        });
    drop(work);
    drop(copies);
    result
}

/// A private temporary directory, removed when the server returns.
fn private_work_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| FleetError::Io {
            path: std::env::temp_dir(),
            source,
        })
}

/// Ballista's session for `config` with Quarry's functions added: the scheduler plans with it,
/// and an executor resolves a task's functions from the registry of one.
pub fn session_state(config: SessionConfig) -> datafusion::common::Result<SessionState> {
    let mut state = default_session_builder(config)?;
    for f in quarry_query::views::functions() {
        state.register_udf(f)?;
    }
    Ok(state)
}
