//! Files of any size: streamed reads and writes through every backend, with
//! memory for one part at a time.

use serde_json::json;

use crate::support::{TestDaytona, flue_probe, output_with_peak_rss, scratch};

/// An agent limited to 64 MiB writes and reads back `mib` MiB in 1 MiB
/// parts; returns the result and flue's peak memory in MiB.
fn stream(mib: u64, extra: &[&str], daytona: Option<&TestDaytona>, tmp: &std::path::Path) -> (serde_json::Value, u64) {
    let mut args = vec!["--memory", "64"];
    args.extend_from_slice(extra);
    let mut command = flue_probe(json!({"mode": "stream", "mib": mib}), &args, tmp);
    if let Some(daytona) = daytona {
        daytona.use_as_sandbox(&mut command);
    }
    let (out, peak) = output_with_peak_rss(&mut command);
    (out.ok(), peak)
}

#[test]
fn an_agent_with_64_mib_moves_a_1_gib_file_on_the_local_sandbox() {
    let tmp = scratch();
    let (result, peak_mib) = stream(1024, &[], None, tmp.path());
    assert_eq!(result["bytes"], 1 << 30, "{result}");
    assert_eq!(result["size"], 1 << 30, "{result}");
    assert_eq!(result["same"], true, "the bytes read back differ from those written");
    assert!(peak_mib < 256, "flue reached {peak_mib} MiB moving a 1 GiB file in parts");
}

#[test]
fn a_large_file_streams_through_the_daytona_connector_without_whole_copies() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    // 256 MiB: four times the agent's memory, and more than the host's cap
    // on a whole HTTP response.
    let (result, peak_mib) = stream(256, &[], Some(&daytona), tmp.path());
    assert_eq!(result["bytes"], 256 << 20, "{result}");
    assert_eq!(result["same"], true, "{result}");
    assert!(peak_mib < 256, "flue reached {peak_mib} MiB moving a 256 MiB file in parts");
    // One upload and one ranged-or-plain download, not a request per part.
    let requests = daytona.server.requests();
    assert_eq!(requests.iter().filter(|r| r.uri.ends_with("/files/bulk-upload")).count(), 1);
    assert_eq!(requests.iter().filter(|r| r.uri.contains("/files/download?")).count(), 1);
    daytona.assert_no_sandboxes_left();
}
