import Dispatch
import Foundation

/// A stop request, set from SIGINT/SIGTERM (or by a test) and polled by long loops between
/// steps, so an interrupted run ends at a step boundary with a checkpoint instead of mid-write.
public final class StopSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var requested: Int32?
    private var sources: [DispatchSourceSignal] = []

    public init() {}

    /// The signal that asked to stop (nil: none yet).
    public var signal: Int32? {
        lock.lock(); defer { lock.unlock() }
        return requested
    }

    public var isSet: Bool { signal != nil }

    public func request(_ signal: Int32 = SIGINT) {
        lock.lock()
        if requested == nil { requested = signal }
        lock.unlock()
    }

    /// Routes SIGINT and SIGTERM here. A second Ctrl-C falls back to the default (immediate exit).
    public func installHandlers(onFirst: @escaping @Sendable (Int32) -> Void = { _ in }) {
        for sig in [SIGINT, SIGTERM] {
            Foundation.signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [weak self] in
                guard let self else { return }
                if self.isSet {
                    Foundation.signal(sig, SIG_DFL)
                    kill(getpid(), sig)
                    return
                }
                self.request(sig)
                onFirst(sig)
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Training stopped early on request; the run directory holds a checkpoint to resume from.
public struct InterruptedError: Error, CustomStringConvertible, Sendable {
    public let step: Int
    public let runPath: String
    public let checkpoint: String?
    public var description: String {
        "interrupted at step \(step); " + (checkpoint.map { "checkpoint \($0) written: run the same command again to resume" }
            ?? "no checkpoint written")
    }
}
