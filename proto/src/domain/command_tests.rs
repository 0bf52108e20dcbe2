use super::*;

fn spec(template: &str) -> CommandSpec {
    CommandSpec {
        template: template.into(),
        grid: BTreeMap::new(),
        samples: 0,
        distributions: BTreeMap::new(),
        workdir: None,
        env: BTreeMap::new(),
        timeout_seconds: None,
    }
}

#[test]
fn words_split_like_a_shell() {
    let words = split_words(r#"python3 'a b' "c \"d\" \x" e\ f  g"#).unwrap();
    assert_eq!(words, ["python3", "a b", r#"c "d" \x"#, "e f", "g"]);
    assert_eq!(split_words("''").unwrap(), [""]);
    assert!(split_words("'open").is_err());
    assert!(split_words("\"open").is_err());
    assert!(split_words("trailing\\").is_err());
}

#[test]
fn placeholders_are_replaced_and_braces_escaped() {
    let lookup = |n: &str| (n == "lr").then(|| "0.1".to_string());
    assert_eq!(substitute("--lr={lr}", &lookup).unwrap(), "--lr=0.1");
    assert_eq!(substitute("{{json}}", &lookup).unwrap(), "{json}");
    assert!(substitute("{nope}", &lookup).unwrap_err().contains("unknown placeholder {nope}"));
    assert!(substitute("a}b", &lookup).is_err());
}

#[test]
fn grid_points_are_every_combination_in_name_order() {
    let mut s = spec("run");
    s.grid.insert("lr".into(), vec!["0.1".into(), "0.01".into()]);
    s.grid.insert("act".into(), vec!["relu".into(), "gelu".into(), "tanh".into()]);
    let labels: Vec<String> = s.points("x").iter().map(point_label).collect();
    assert_eq!(labels.len(), 6);
    assert_eq!(s.point_count(), 6);
    assert_eq!(labels[0], "act=relu,lr=0.1");
    assert_eq!(labels[1], "act=relu,lr=0.01");
    assert_eq!(labels[5], "act=tanh,lr=0.01");
    assert_eq!(point_label(&BTreeMap::new()), "default");
    for point in s.points("x") {
        assert_eq!(label_point(&point_label(&point)), point);
    }
    assert!(label_point("default").is_empty());
    assert_eq!(spec("run").points("x").len(), 1);
}

#[test]
fn samples_are_drawn_in_range_and_the_same_for_the_same_sweep() {
    let mut s = spec("run");
    s.grid.insert("opt".into(), vec!["adam".into(), "sgd".into()]);
    s.samples = 20;
    s.distributions.insert("lr".into(), Distribution::LogUniform { low: 1e-4, high: 1e-1 });
    s.distributions.insert("layers".into(), Distribution::IntUniform { low: 2, high: 4 });
    s.distributions.insert("drop".into(), Distribution::Uniform { low: 0.0, high: 0.5 });
    let a = s.points("sweep-a");
    assert_eq!(a.len(), 40);
    assert_eq!(s.point_count(), 40);
    assert_eq!(a, s.points("sweep-a"), "a resubmit must draw the same points");
    assert_ne!(a, s.points("sweep-b"));
    for p in &a {
        let lr: f64 = p["lr"].parse().unwrap();
        assert!((1e-4..=1e-1).contains(&lr), "{lr}");
        assert!(["2", "3", "4"].contains(&p["layers"].as_str()));
        let drop: f64 = p["drop"].parse().unwrap();
        assert!((0.0..0.5).contains(&drop));
        assert!(p["lr"].len() <= 12, "short values: {}", p["lr"]);
    }
    // Both grid values get every sample.
    assert_eq!(a[0]["lr"], a[20]["lr"]);
    assert_ne!(a[0]["opt"], a[20]["opt"]);
}

#[test]
fn a_job_renders_its_own_command_line() {
    let mut s = spec("python3 train.py --lr {lr} --seed={seed} 'name {sweep}-{job_id}' {epochs}x{attempt}");
    s.grid.insert("lr".into(), vec!["0.1".into()]);
    let point = s.points("sw").remove(0);
    let job = JobFields { seed: 7, job_id: 12, attempt: 2, epochs: 30, sweep: "sw" };
    assert_eq!(
        s.render(&point, &job),
        ["python3", "train.py", "--lr", "0.1", "--seed=7", "name sw-12", "30x2"]
    );
}

#[test]
fn a_value_with_spaces_stays_one_argument() {
    let mut s = spec("run {msg}");
    s.grid.insert("msg".into(), vec!["a b; rm -rf /".into()]);
    let point = s.points("sw").remove(0);
    let job = JobFields { seed: 0, job_id: 1, attempt: 1, epochs: 1, sweep: "sw" };
    assert_eq!(s.render(&point, &job), ["run", "a b; rm -rf /"]);
}

#[test]
fn metric_names() {
    for ok in ["val_acc", "top5", "_x", "loss.val", "a-b"] {
        assert!(is_metric_name(ok), "{ok}");
    }
    for bad in ["", "5top", "a b", "a\"b", "a,b", &"x".repeat(65)] {
        assert!(!is_metric_name(bad), "{bad}");
    }
}

#[test]
fn objective_direction() {
    let max = Objective::default();
    assert!(max.better(0.9, 0.8));
    let min = Objective { metric: "val_loss".into(), direction: Direction::Min };
    assert!(min.better(0.1, 0.2));
    assert!(!min.better(0.2, 0.2));
}
