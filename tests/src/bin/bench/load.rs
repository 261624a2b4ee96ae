//! An allowed client's memcached latency, quiet and under floods.

use serde_json::json;

/// An allowed client's memcached set/get latency, quiet and while UDP and SYN floods hit the
/// server through mcfilter (a lab of namespaces).
pub(crate) fn load() -> serde_json::Value {
    use mcfilter_tests::{
        lab::{IFACE, Lab},
        load,
        memcache::Memcached,
    };
    const ROUNDS: usize = 1000;
    let lab = Lab::new("bl");
    let client = lab.host("blc", 10);
    let attacker = lab.host("blx", 66);
    let _memcached = Memcached::start(&lab.server.ns, false);
    let mcf = mcfilter_tests::cli::Mcfilter::new("bl").in_netns(&lab.server.ns);
    mcf.ok(&["attach", IFACE, "--allow", &client.v4.to_string()]);
    let server = std::net::SocketAddr::new(lab.server.v4.into(), 11211);
    let quiet = load::client_loop(&client, server, ROUNDS);
    let flooded = load::client_loop_under_flood(&lab, &client, &attacker, 11211, ROUNDS);
    mcf.ok(&["detach", IFACE]);
    println!(
        "\nLoad: an allowed client's memcached set/get ({ROUNDS} rounds), quiet and while {} UDP \
         datagrams and {} forged SYNs hit port 11211\n",
        load::UDP_FLOOD,
        load::SYN_FLOOD
    );
    println!("| client | errors | median us | p99 us |");
    println!("| --- | ---: | ---: | ---: |");
    let mut out = Vec::new();
    for (name, run) in [("quiet", quiet), ("under floods", flooded)] {
        let (median, p99) = (run.median.as_micros(), run.p99.as_micros());
        println!("| {name} | {} | {median} | {p99} |", run.errors);
        out.push(json!({"client": name, "errors": run.errors, "median_us": median, "p99_us": p99}));
    }
    serde_json::Value::Array(out)
}
