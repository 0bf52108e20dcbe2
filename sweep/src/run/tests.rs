//! `sweep run`'s flags and the parts it starts, without training.

use super::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

#[test]
fn local_workers_default_to_auto_kernels_and_reject_unknown_ones() {
    use clap::Parser;
    use worker::train_ops::{KernelChoice, Kernels};
    assert_eq!(Cli::parse_from(["sweep"]).run.slots.kernels, KernelChoice::Auto);
    let defaults = Cli::parse_from(["sweep"]).run;
    assert_eq!(
        (defaults.checkpoint_dir.to_str(), defaults.cadence.checkpoint_every),
        (Some("sweep-checkpoints"), 5)
    );
    assert_eq!(defaults.cadence.checkpoint_min_secs, 30, "a job checkpoints at most twice a minute");
    let stock = Cli::parse_from(["sweep", "--kernels", "stock"]).run.slots.kernels;
    assert_eq!(stock, KernelChoice::Set(Kernels::STOCK));
    let err = Cli::try_parse_from(["sweep", "--kernels", "wgrad+fp8"]).err().expect("rejected");
    assert!(err.to_string().contains("fp8"), "{err}");
}

#[tokio::test]
async fn an_exposed_listen_address_needs_tls_and_tokens_or_insecure() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("sweep.db").display());
    let args = Cli::parse_from(["sweep", "--listen", "0.0.0.0:0", "--database-url", &db]).run;
    let err = run_until(args, std::future::pending()).await.unwrap_err().to_string();
    assert!(err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--insecure"), "{err}");
    assert!(!dir.path().join("sweep.db").exists(), "refused before opening the database");
}

#[tokio::test]
async fn behind_tls_the_local_parts_use_loopback_and_in_memory_credentials() {
    use coordinator::auth::{ServerTls, TokenStore};
    let store = std::sync::Arc::new(TokenStore::in_memory());
    let tls = Some(ServerTls::from_pem(Vec::new(), Vec::new(), None));
    let security = Security { tls, tokens: Some(store.clone()) };
    let (listeners, local) = bind("127.0.0.1:0".parse().unwrap(), security).await.unwrap();
    assert_eq!(listeners.len(), 2);
    assert!(listeners[1].security.tls.is_none() && listeners[1].security.tokens.is_some());
    let loopback = listeners[1].listener.local_addr().unwrap();
    assert_eq!(local.url, format!("http://{loopback}"));
    let token = |s: &ClientSecurity| s.token.clone().expect("a token");
    assert_eq!(store.verify(token(&local.user).expose()).unwrap().role, Role::Admin);
    assert_eq!(store.verify(token(&local.worker).expose()).unwrap().name, "sweep-run:worker");

    let (listeners, local) = bind("127.0.0.1:0".parse().unwrap(), Security::none()).await.unwrap();
    assert_eq!(listeners.len(), 1);
    assert!(local.user.token.is_none() && local.worker.token.is_none());
}

#[test]
fn fusing_defaults_to_auto_and_takes_a_number_of_jobs() {
    use clap::Parser;
    use worker::training::FuseChoice;
    assert_eq!(Cli::parse_from(["sweep"]).run.slots.fuse, FuseChoice::Auto);
    assert_eq!(Cli::parse_from(["sweep", "--fuse", "4"]).run.slots.fuse, FuseChoice::Fixed(4));
    for bad in ["0", "many"] {
        let err = Cli::try_parse_from(["sweep", "--fuse", bad]).err().expect("rejected");
        assert!(err.to_string().contains("--fuse"), "{bad}: {err}");
    }
}

#[test]
fn overrides_from_flags_reach_the_spec() {
    use clap::Parser;
    let args = Cli::parse_from([
        "sweep",
        "--preset",
        "quick",
        "--seeds",
        "0..2",
        "--epochs",
        "3",
        "--variants",
        "natural_softmax,normal_lr1e-3",
        "--name",
        "mine",
        "--width",
        "0.5",
    ])
    .run;
    let spec = submissions(&args).unwrap().remove(0);
    assert_eq!((spec.name.as_str(), spec.seeds.as_slice(), spec.epochs), ("mine", &[0, 1][..], 3));
    assert_eq!(spec.variants, vec!["natural_softmax", "normal_lr1e-3"]);
    assert_eq!(spec.data.unwrap().width_multiplier, 0.5);
    let default = submissions(&Cli::parse_from(["sweep"]).run).unwrap();
    assert_eq!(default[0].name, "smoke");
}

#[test]
fn a_sweep_shaped_by_flags_trains_on_the_full_data() {
    use clap::Parser;
    let flags = ["sweep", "--name", "mine", "--seeds", "0..3", "--epochs", "100", "--batch-size", "512"];
    let spec = submissions(&Cli::parse_from(flags).run).unwrap().remove(0);
    assert_eq!((spec.name.as_str(), spec.seeds.len(), spec.epochs, spec.batch_size), ("mine", 3, 100, 512));
    let data = spec.data.unwrap();
    assert_eq!(
        (data.train_limit, data.test_limit, data.width_multiplier),
        (0, 0, 0.0),
        "all data, full width"
    );
    assert_eq!(spec.variants.len(), 5, "every variant");
    // Only part of a sweep's shape is an error naming what is missing, not a smoke run.
    let err = submissions(&Cli::parse_from(["sweep", "--name", "mine", "--epochs", "3"]).run).unwrap_err();
    assert!(err.to_string().contains("--seeds"), "{err}");
    // A preset keeps its own data options under the same flags.
    let smoke = submissions(&Cli::parse_from(["sweep", "--preset", "smoke", "--epochs", "3"]).run).unwrap();
    assert_eq!((smoke[0].epochs, smoke[0].data.as_ref().unwrap().train_limit), (3, 512));
}
