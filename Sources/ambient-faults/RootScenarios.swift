import FaultInjection
import Foundation

/// The two scenarios that need root: link-cut (network namespaces, veth pairs) and disk-full (a tmpfs).
extension ClusterRun {
    /// One namespace per worker, a veth pair each: the host end HOSTVETH(K) has 10.P.K.1/24, the
    /// namespace end 10.P.K.2/24 with the host end as default route. Only these addresses are used.
    func setUpNamespaces(prefix: Int) throws {
        let pid = getpid()
        for k in 1...workerCount {
            let ns = "ambfi\(pid)w\(k)", host = hostVeth(k), inner = "afn\(pid)\(k)"
            guard quietly(["ip", "netns", "add", ns]) else { throw ScenarioFailure("cannot create network namespaces (ip netns/veth)") }
            Resources.shared.addNamespace(ns)
            guard quietly(["ip", "link", "add", host, "type", "veth", "peer", "name", inner]) else {
                throw ScenarioFailure("cannot create network namespaces (ip netns/veth)")
            }
            Resources.shared.addLink(host)
            let net = "10.\(prefix).\(k)"
            let steps = [["ip", "link", "set", inner, "netns", ns], ["ip", "addr", "add", "\(net).1/24", "dev", host],
                         ["ip", "link", "set", host, "up"], ["ip", "-n", ns, "link", "set", "lo", "up"],
                         ["ip", "-n", ns, "addr", "add", "\(net).2/24", "dev", inner], ["ip", "-n", ns, "link", "set", inner, "up"],
                         ["ip", "-n", ns, "route", "add", "default", "via", "\(net).1"]]
            for command in steps where !quietly(command) {
                throw ScenarioFailure("cannot create network namespaces (ip netns/veth)")
            }
            namespaces["w\(k)"] = ns
        }
    }

    func hostVeth(_ k: Int) -> String { "afh\(getpid())\(k)" }

    func linkCut(_ plan: FaultPlan) throws {
        defer { Resources.shared.teardownNetwork() }
        try setUpNamespaces(prefix: plan.netPrefix)
        // Not loopback: CURVE keys, one per worker, and the coordinator's allow-list.
        let keys = dir + "/keys"
        try FileManager.default.createDirectory(atPath: keys + "/workers", withIntermediateDirectories: true)
        guard keygen(["--name", "coordinator", "--dir", keys]) else { throw ScenarioFailure("keys generate failed") }
        for name in names where !keygen(["--name", name, "--dir", keys + "/workers"]) { throw ScenarioFailure("keys generate failed") }
        coordinatorSecurity = ["--key", keys + "/coordinator.key", "--allow", keys + "/workers"]
        workerExtra = []   // no route between the workers' namespaces: the coordinator reduces
        endpoint = "tcp://10.\(plan.netPrefix).1.1:*"
        try startCoordinator("coordinator.log")
        for name in names {
            try startWorker(name, security: ["--key", keys + "/workers/\(name).key", "--server-key", keys + "/coordinator.pub"])
        }
        let victim = "w\(plan.victim)"
        try waitForStep(plan.step)
        let t0 = now()
        _ = quietly(["ip", "link", "set", hostVeth(plan.victim), "down"])
        let s0 = lastStep(run)
        measureWorkerFault(victim, t0, Double(plan.pause))
        let tu = sleepUntil(t0 + Double(plan.pause))
        _ = quietly(["ip", "link", "set", hostVeth(plan.victim), "up"])
        let back = awaitEvent("join", victim + "#", after: tu, within: 30)
            .map { ", rejoined \(Timing.seconds($0.time - tu)) s after the link came back" } ?? ", did not rejoin before the end"
        note = "link of \(victim) (10.\(plan.netPrefix).\(plan.victim).2, coordinator on \(endpoint), CURVE) down at step \(s0) "
            + "for \(plan.pause) s; dropped: \(dropDetail.isEmpty ? "?" : dropDetail)\(back)"
        try finishAndCompare(lax: victim)
    }

    /// `ambient keys generate ARGS`, bounded, output discarded.
    private func keygen(_ arguments: [String]) -> Bool {
        guard let p = try? Resources.shared.spawn(log: dir + "/keys.log", suite.binary, ["keys", "generate"] + arguments) else { return false }
        return waitExit(p, 60) == 0
    }

    func diskFull() throws {
        let ck = checkpointEvery
        guard let first = checkpointFiles(reference, { $0.hasSuffix(".ambient") }).first,
              let size0 = (try? FileManager.default.attributesOfItem(atPath: reference + "/checkpoints/" + first))?[.size] as? Int else {
            throw ScenarioFailure("no checkpoint in the reference run")
        }
        let size = size0 * 3 / 2   // room for one checkpoint, not two
        try startCoordinator("coordinator.log")
        // The coordinator creates RUNDIR/checkpoints and waits for its workers: mount the tmpfs there now.
        guard waitUntil(20, { isDirectory(run + "/checkpoints") }) else { throw ScenarioFailure("no checkpoint directory") }
        guard quietly(["mount", "-t", "tmpfs", "-o", "size=\(size)", "ambient-faults", run + "/checkpoints"]) else {
            throw ScenarioFailure("cannot mount a tmpfs")
        }
        Resources.shared.addMount(run + "/checkpoints")
        for name in names { try startWorker(name) }
        let t0 = now()
        let status = waitExit(coordinator!, 180)
        let t1 = now()
        let message = log("coordinator.log").split(separator: "\n").first { $0.contains("ambient: error") }.map(String.init) ?? ""
        if status == 0 { throw ScenarioFailure("the run finished although the checkpoint disk was full") }
        if status == 124 { throw ScenarioFailure("the coordinator hung with a full checkpoint disk") }
        guard message.contains("No space left on device"), message.contains("checkpoint of step \(2 * ck) not written") else {
            throw ScenarioFailure("unclear or unexpected message (exit \(status)): \(message)")
        }
        if !partials.isEmpty {
            let all = (try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? []
            throw ScenarioFailure("a partial checkpoint was left behind: \(all.sorted().joined(separator: " "))")
        }
        if firstEvent("fatal", "", after: t0) == nil { throw ScenarioFailure("no fatal event in events.jsonl") }
        for name in workers.keys.sorted() where waitExit(workers[name]!, 30) == 124 {
            throw ScenarioFailure("worker \(name) did not exit after the coordinator stopped")
        }
        let workerMessage = String((log("w1.log").split(separator: "\n").first { $0.contains("the run stopped") } ?? "").prefix(60))
        // Grow the disk and run the same command again: it resumes from the one checkpoint that fit.
        guard quietly(["mount", "-o", "remount,size=64m", run + "/checkpoints"]) else { throw ScenarioFailure("cannot grow the tmpfs") }
        let t2 = now()
        workers = [:]
        try startCoordinator("coordinator2.log")
        for name in names { try startWorker(name) }
        guard let ev = awaitEvent("restore", "", after: t2, within: 60) else {
            throw ScenarioFailure("the rerun did not resume from the checkpoint that fit")
        }
        detected = Timing.seconds(t1 - t0)
        recovered = "n/a"
        let said = message.range(of: "error: ").map { String(message[$0.upperBound...]) } ?? message
        note = "tmpfs of \(size) bytes on checkpoints/; coordinator exit \(status) after \(detected!) s: \"\(said)\"; "
            + "workers: \"\(workerMessage)...\"; no partial file; grown to 64 MB, rerun resumed at step \(ev.step)"
        note = note.replacingOccurrences(of: run + "/", with: "")
        try finishAndCompare()
        if quietly(["umount", run + "/checkpoints"]) { Resources.shared.forgetMounts() }
    }
}

func isDirectory(_ path: String) -> Bool {
    var dir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
}
