import FileIO
import Foundation
import Logging
import TensorCore
import Wire

/// A worker's error-feedback residuals of lossy codecs, per (shard, chunk): they follow the
/// shard as long as this worker keeps it. Rules: a residual whose shard was not computed here
/// at the previous step is read from the checkpoint's residual file of this step if there is
/// one (a restart from that checkpoint, or a shard that moved at a checkpoint step), else starts
/// again from 0 (the shard moved); every residual in memory is dropped when the parameters are
/// replaced by a full copy (a restart or a repair). Before each checkpoint step the worker that
/// computes a shard writes its residuals (ResidualFile) to the welcome's `residualDirectory`,
/// before the shard's last chunk leaves. Used from the compute slots (locked).
final class FeedbackStore: @unchecked Sendable {
    private let lock = NSLock()
    private var feedbacks: [Int: FeedbackBox] = [:]
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    /// Drops every residual (the parameters were replaced by a full copy).
    func clear() {
        lock.lock()
        feedbacks = [:]
        lock.unlock()
    }

    /// Writes the residuals of `shard` for checkpoint step `step` (every chunk of the shard has
    /// been encoded).
    func save(shard k: Int, step: Int, chunks: [Range<Int>], directory: String) {
        var file = ResidualFile(step: step, shard: k, chunks: [])
        lock.lock()
        for (c, r) in chunks.enumerated() {
            guard let box = feedbacks[k << 20 | c], box.state.count == r.count else { continue }
            file.chunks.append(.init(offset: r.lowerBound, values: box.state.residual))
        }
        lock.unlock()
        let path = ResidualFile.path(directory: directory, step: step, shard: k)
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try FileBytes.writeAtomically(file.encode(), to: path)
        } catch {
            logger.warning("cannot write error-feedback residuals: a restart from this checkpoint resets them",
                           metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Brings back the residuals of `shard` for `step` from the checkpoint's residual file when
    /// this worker did not compute the shard at the previous step.
    func restore(shard k: Int, step: Int, chunks: [Range<Int>], directory dir: String) {
        lock.lock()
        let current = chunks.indices.allSatisfy { c in
            feedbacks[k << 20 | c].map { $0.lastStep == step - 1 || $0.lastStep == step } ?? false
        }
        lock.unlock()
        if current { return }
        let path = ResidualFile.path(directory: dir, step: step, shard: k)
        guard FileManager.default.fileExists(atPath: path) else { return }
        do {
            let file = try ResidualFile.decode(FileBytes.contents(of: path))
            guard file.step == step, file.shard == k, file.chunks.map(\.offset) == chunks.map(\.lowerBound),
                  zip(file.chunks, chunks).allSatisfy({ $0.values.count == $1.count }) else {
                throw ClusterError("it does not match this run's chunk plan")
            }
            lock.lock()
            for (c, chunk) in file.chunks.enumerated() {
                var state = ErrorFeedback(count: chunk.values.count)
                state.restore(chunk.values)
                feedbacks[k << 20 | c] = FeedbackBox(state: state, lastStep: step - 1)
            }
            lock.unlock()
            logger.info("restored error-feedback residuals", metadata: ["shard": "\(k)", "step": "\(step)"])
        } catch {
            logger.warning("unreadable error-feedback residuals: starting them from 0", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// The residual of (shard, chunk), reset when the shard was not computed here last step.
    func feedback(shard: Int, chunk: Int, step: Int, count: Int) -> FeedbackBox {
        lock.lock()
        defer { lock.unlock() }
        let key = shard << 20 | chunk
        if let box = feedbacks[key], box.state.count == count {
            if box.lastStep != step - 1 && box.lastStep != step { box.state.reset() }
            box.lastStep = step
            return box
        }
        let box = FeedbackBox(state: ErrorFeedback(count: count), lastStep: step)
        feedbacks[key] = box
        return box
    }
}

/// One error-feedback state, mutated only by the compute slot that holds its shard.
final class FeedbackBox: @unchecked Sendable {
    var state: ErrorFeedback
    var lastStep: Int
    init(state: ErrorFeedback, lastStep: Int) {
        self.state = state
        self.lastStep = lastStep
    }
}
