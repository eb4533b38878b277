import Foundation

/// One checkpoint being written on a thread of its own, so the coordinator's thread keeps
/// serving heartbeats and the next step meanwhile. The snapshot is taken before (a consistent
/// state at one version); `write` only turns it into a file. At 8 simulated hosts a final
/// checkpoint written on the coordinator's thread took 16 s, longer than the workers'
/// coordinator timeout: every worker decided the coordinator was gone and registered again.
final class CheckpointWriter: @unchecked Sendable {
    /// The step the checkpoint is for, and when its writing started (coordinator's clock).
    let step: Int
    let startedAt: Double
    private let lock = NSLock()
    private var result: Result<String, any Error>?

    init(step: Int, startedAt: Double, write: @escaping @Sendable () throws -> String) {
        self.step = step
        self.startedAt = startedAt
        let thread = Thread { [self] in
            let r = Result { try write() }
            lock.lock()
            result = r
            lock.unlock()
        }
        thread.name = "ambient-checkpoint"
        thread.start()
    }

    /// The path written or the error, once the write has ended (nil while it runs).
    var outcome: Result<String, any Error>? {
        lock.lock(); defer { lock.unlock() }
        return result
    }
}
