import FaultInjection
import Foundation

/// The loopback scenarios. Each sets the cluster's note, detected and recovered times, and
/// throws ScenarioFailure with the reason when the scenario fails.
extension ClusterRun {
    func run(_ scenario: Scenario, _ plan: FaultPlan) throws {
        switch scenario {
        case .workerKill: try workerKill(plan)
        case .reducerKill: try reducerKill(plan)
        case .ownerOptimizerKill: try reducerKill(plan, ownersApply: true)
        case .workerStop: try workerStop(plan)
        case .workerRestart: try workerRestart(plan)
        case .coordinatorKill: try coordinatorKill(plan)
        case .coordinatorKillCheckpoint: try coordinatorKillCheckpoint()
        case .checkpointBitflip: try checkpointBitflip(plan)
        case .linkCut: try linkCut(plan)
        case .diskFull: try diskFull()
        }
    }

    /// kill -9 of the victim at the plan's step; returns (victim, fault time, step at the fault).
    private func killWorker(_ plan: FaultPlan) throws -> (String, Double, Int) {
        let victim = "w\(plan.victim)"
        try startCluster()
        try waitForStep(plan.step)
        let t0 = now()
        kill(workers[victim]!.processIdentifier, SIGKILL)
        return (victim, t0, lastStep(run))
    }

    func workerKill(_ plan: FaultPlan) throws {
        let (victim, t0, s0) = try killWorker(plan)
        workers[victim] = nil
        measureWorkerFault(victim, t0, 60)
        note = "kill -9 \(victim) at step \(s0); dropped: \(dropDetail.isEmpty ? "?" : dropDetail)"
        try finishAndCompare()
    }

    /// The sharded reduction: every worker owns a range, so the victim is a reducer. Its ranges
    /// move to the survivors (a new owner map); if they had not all reached the coordinator, the
    /// step is computed again under the new map. The weights must still equal the reference.
    /// `ownersApply`: each owner applies Adam to its ranges (`--owners-apply`); the survivors that
    /// take the victim's ranges first receive the full state (its moments died with it).
    func reducerKill(_ plan: FaultPlan, ownersApply: Bool = false) throws {
        coordinatorExtra = ["--range-owners", String(workerCount)] + (ownersApply ? ["--owners-apply"] : [])
        let (victim, t0, s0) = try killWorker(plan)
        workers[victim] = nil
        measureWorkerFault(victim, t0, 60)
        let again = readText(run + "/events.jsonl").split(separator: "\n").filter { $0.contains("range owner left") }.count
        note = "--range-owners \(workerCount)\(ownersApply ? " --owners-apply" : ""); kill -9 reducer \(victim) at step \(s0); dropped: \(dropDetail.isEmpty ? "?" : dropDetail); "
            + "steps computed again under a new owner map: \(again)"
        try finishAndCompare()
    }

    /// Waits until `t0 + pause`, then returns the time.
    func sleepUntil(_ t: Double) -> Double {
        while now() < t { Thread.sleep(forTimeInterval: 0.05) }
        return now()
    }

    func workerStop(_ plan: FaultPlan) throws {
        let victim = "w\(plan.victim)"
        try startCluster()
        try waitForStep(plan.step)
        let pid = workers[victim]!.processIdentifier
        let t0 = now()
        kill(pid, SIGSTOP)
        let s0 = lastStep(run)
        measureWorkerFault(victim, t0, Double(plan.pause))
        let tc = sleepUntil(t0 + Double(plan.pause))
        kill(pid, SIGCONT)
        let back = awaitEvent("join", victim + "#", after: tc, within: 20)
            .map { ", rejoined \(Timing.seconds($0.time - tc)) s after SIGCONT" } ?? ", did not rejoin before the end"
        note = "SIGSTOP \(victim) at step \(s0) for \(plan.pause) s; dropped: \(dropDetail.isEmpty ? "?" : dropDetail)\(back)"
        try finishAndCompare(lax: victim)
    }

    func workerRestart(_ plan: FaultPlan) throws {
        let (victim, t0, s0) = try killWorker(plan)
        waitExit(workers[victim]!, 5)
        try startWorker(victim)
        measureWorkerFault(victim, t0, 60)
        guard let ev = awaitEvent("join", victim + "#", after: t0, within: 60) else {
            throw ScenarioFailure("the restarted \(victim) never joined")
        }
        note = "kill -9 \(victim) at step \(s0), restarted at once; old one dropped: \(dropDetail.isEmpty ? "?" : dropDetail); "
            + "new incarnation joined after \(Timing.seconds(ev.time - t0)) s"
        try finishAndCompare()
    }

    func coordinatorKill(_ plan: FaultPlan) throws {
        try startCluster()
        try waitForStep(plan.step)
        let t0 = now(), s0 = lastStep(run)
        killCoordinator()
        try restartAndMeasure(t0, log: "coordinator2.log")
        note = "kill -9 coordinator at step \(s0); resumed at step \(resumedStep) from \(basename(resumedFrom))"
        try finishAndCompare()
    }

    func coordinatorKillCheckpoint() throws {
        try startCluster()
        guard waitUntil(180, { !committed.isEmpty || !coordinatorAlive }), !committed.isEmpty else {
            throw ScenarioFailure("no committed checkpoint: \(tail(dir + "/coordinator.log", 2).joined(separator: " ")) ")
        }
        // Catch the next checkpoint in flight: poll for its temporary file and kill at once.
        var caught = false
        let end = now() + 180
        while coordinatorAlive && now() <= end {
            if !partials.isEmpty { kill(coordinator!.processIdentifier, SIGKILL); caught = true; break }
            Thread.sleep(forTimeInterval: 0.005)
        }
        let t0 = now()
        killCoordinator()
        guard caught else { throw ScenarioFailure("no checkpoint write caught in flight") }
        let partial = partials.first ?? "none"
        let s0 = lastStep(run)
        try restartAndMeasure(t0, log: "coordinator2.log")
        let inflight = partial.components(separatedBy: ".partial.")[0]
        if basename(resumedFrom) == inflight { throw ScenarioFailure("resumed from the checkpoint that was being written") }
        note = "kill -9 coordinator at step \(s0) while writing \(inflight) (\(partial)); resumed from \(basename(resumedFrom))"
        try finishAndCompare()
        if !partials.isEmpty {
            let all = (try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? []
            throw ScenarioFailure("the temporary file of the killed write is still there: \(all.sorted().joined(separator: " "))")
        }
        if log("coordinator2.log").contains("removed the temporary file") { note += "; the restart removed its temporary file" }
    }

    func checkpointBitflip(_ plan: FaultPlan) throws {
        try startCluster()
        try waitForStep(plan.step)
        let t0 = now()
        killCoordinator()
        var newest = readText(run + "/checkpoints/LATEST").trimmingCharacters(in: .whitespacesAndNewlines)
        if newest.isEmpty || !isFile(run + "/checkpoints/" + newest) { newest = committed.last ?? "" }
        let file = run + "/checkpoints/" + newest
        guard !newest.isEmpty, var bytes = FileManager.default.contents(atPath: file).map({ [UInt8]($0) }), !bytes.isEmpty else {
            throw ScenarioFailure("no checkpoint to corrupt in \(run)/checkpoints")
        }
        let offset = plan.flipOffset(size: bytes.count)
        flipBit(&bytes, offset: offset, bit: plan.flipBit)
        guard let h = FileHandle(forUpdatingAtPath: file), (try? h.seek(toOffset: UInt64(offset))) != nil,
              (try? h.write(contentsOf: [bytes[offset]])) != nil, (try? h.close()) != nil else { throw ScenarioFailure("cannot write \(file)") }
        try restartAndMeasure(t0, log: "coordinator2.log")
        let skipped = log("coordinator2.log").split(separator: "\n").filter { $0.contains("skipping checkpoint") }
        guard skipped.contains(where: { $0.contains(newest) }) else { throw ScenarioFailure("the flipped \(newest) was not reported as skipped") }
        if basename(resumedFrom) == newest { throw ScenarioFailure("resumed from the corrupted \(newest)") }
        let why = RunLogs.skipReason(String(skipped[0])) ?? "see log"
        note = "flipped a bit at byte \(offset) of \(newest) (\(bytes.count) bytes); skipped (\(why)); resumed from \(basename(resumedFrom))"
        try finishAndCompare()
    }
}

func basename(_ path: String) -> String { (path as NSString).lastPathComponent }
