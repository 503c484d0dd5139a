use super::*;

fn wan(p: Probabilities, header: u32, latency_ms: f64, realizations: usize) -> Network {
    NetworkParams::Wan {
        rates_mbps: PAPER_RATES_MBPS.to_vec(),
        probabilities: p,
        header_bytes: header,
        latency_ms,
        realizations,
    }
    .check()
    .unwrap()
}

#[test]
fn lan_is_the_sum_of_bits_over_the_rate() {
    let net = NetworkParams::Lan {
        rate_mbps: 2.0,
        header_bytes: 10,
        latency_ms: 1.5,
    }
    .check()
    .unwrap();
    let rates = net.rates(3, 0);
    // Two messages: (1e6 + 80) + (3e6 + 80) bits at 2e6 bit/s, plus 2 x 1.5 ms.
    let t = net.round_latency(&[1_000_000, 0, 3_000_000], &rates);
    assert!((t - ((4e6 + 160.0) / 2e6 + 0.003)).abs() < 1e-12, "{t}");
    assert_eq!(net.round_latency(&[0, 0, 0], &rates), 0.0);
}

#[test]
fn wan_round_is_its_slowest_message() {
    let net = wan(Probabilities::default(), 0, 0.0, 1);
    let rates = [1e6, 1e9, 1e7];
    // Node 0 is silent: node 2's 1e6 bits at 10 Mbps (0.1 s) beat node 1's 1e8 bits at 1 Gbps.
    let t = net.round_latency(&[0, 100_000_000, 1_000_000], &rates);
    assert!((t - 0.1).abs() < 1e-12, "{t}");
    // With a header and a fixed latency, the slowest message pays both once.
    let net = wan(Probabilities::default(), 125, 270.0, 1);
    let t = net.round_latency(&[999_000, 0, 0], &rates);
    assert!((t - (1.0 + 0.27)).abs() < 1e-12, "{t}");
}

#[test]
fn drawn_rates_follow_the_probabilities() {
    for (p, want) in [
        (Probabilities::Preset(Preset::Uniform), UNIFORM),
        (Probabilities::Preset(Preset::Skewed), SKEWED),
    ] {
        let net = wan(p, 0, 0.0, 1);
        let n = 200_000;
        let rates = net.rates(n, 7);
        for (r, w) in PAPER_RATES_MBPS.iter().zip(want) {
            let share = rates.iter().filter(|&&x| x == r * 1e6).count() as f64 / n as f64;
            let sd = (w * (1.0 - w) / n as f64).sqrt();
            assert!(
                (share - w).abs() < 5.0 * sd + 1e-12,
                "{r} Mbps: {share} vs {w}"
            );
        }
    }
    // Each realization has its own stream; the same seed gives the same rates.
    let net = wan(Probabilities::default(), 0, 0.0, 1);
    assert_eq!(net.rates(50, 3), net.rates(50, 3));
    assert_ne!(net.rates(50, 3), net.rates(50, 4));
}

#[test]
fn stats_over_realizations_come_from_the_trace() {
    let net = wan(Probabilities::Preset(Preset::Skewed), 0, 0.0, 20);
    let mut trace = Trace::new(4);
    for t in 0..50u32 {
        trace
            .push_round(&[1000 * (t % 3), 0, 5000, if t % 2 == 0 { 32 } else { 0 }])
            .unwrap();
    }
    let stats = trace.latency_stats(&net, 11, &[0, 1, 25, 50]);
    assert_eq!(stats[0].mean, 0.0);
    // Against a direct recomputation, realization by realization.
    let finals: Vec<f64> = (0..20)
        .map(|r| {
            *trace
                .cumulative_latency(&net, &net.rates(4, 11 + r))
                .last()
                .unwrap()
        })
        .collect();
    let mean = finals.iter().sum::<f64>() / 20.0;
    assert!((stats[3].mean - mean).abs() < 1e-12 * mean.max(1.0));
    assert!(stats[3].min <= stats[3].p5 && stats[3].p5 <= stats[3].mean);
    assert!(stats[3].mean <= stats[3].p95 && stats[3].p95 <= stats[3].max);
    // Cumulative: non-decreasing in the round.
    assert!(stats[1].mean <= stats[2].mean && stats[2].mean <= stats[3].mean);
    assert_eq!(
        trace.push_round(&[1, 2]),
        Err(Error::Width {
            expected: 4,
            found: 2
        })
    );
}

#[test]
fn bad_parameters_name_the_field() {
    let e = NetworkParams::Lan {
        rate_mbps: 0.0,
        header_bytes: 0,
        latency_ms: 0.0,
    }
    .check()
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "network.rate_mbps must be a finite number > 0, got 0"
    );
    let e = NetworkParams::Wan {
        rates_mbps: vec![1.0, 2.0],
        probabilities: Probabilities::Values(vec![0.5, 0.6]),
        header_bytes: 0,
        latency_ms: 0.0,
        realizations: 1,
    }
    .check()
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("network.probabilities must be numbers >= 0 summing to 1"),
        "{e}"
    );
    let e = NetworkParams::Wan {
        rates_mbps: PAPER_RATES_MBPS.to_vec(),
        probabilities: Probabilities::Values(vec![1.0]),
        header_bytes: 0,
        latency_ms: 0.0,
        realizations: 1,
    }
    .check()
    .unwrap_err();
    assert!(e.to_string().contains("one probability per rate"), "{e}");
}

#[test]
fn config_forms_parse() {
    #[derive(serde::Deserialize)]
    struct Doc {
        network: NetworkParams,
    }
    let d: Doc = toml::from_str("[network]\nkind = \"wan\"\nprobabilities = \"skewed\"\n").unwrap();
    assert_eq!(
        d.network,
        NetworkParams::Wan {
            rates_mbps: PAPER_RATES_MBPS.to_vec(),
            probabilities: Probabilities::Preset(Preset::Skewed),
            header_bytes: 0,
            latency_ms: 0.0,
            realizations: 100,
        }
    );
    let d: Doc = toml::from_str(
        "[network]\nkind = \"wan\"\nrates_mbps = [1, 2]\nprobabilities = [0.25, 0.75]\n",
    )
    .unwrap();
    assert!(d.network.check().is_ok());
    let d: Doc = toml::from_str("[network]\nkind = \"lan\"\nrate_mbps = 100\n").unwrap();
    assert!(d.network.check().is_ok());
    assert!(toml::from_str::<Doc>("[network]\nkind = \"lan\"\nrate = 100\n").is_err());
}
