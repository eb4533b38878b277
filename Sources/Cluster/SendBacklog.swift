/// Messages a socket would not take yet (EAGAIN at its high-water mark), oldest first: a peer
/// that is slow to read is not a dead one, and a lost gradient chunk or update chunk would
/// stall a step until its deadline. They go out in order before anything newer. The
/// coordinator keeps one per worker, a worker one for its coordinator.
public struct SendBacklog {
    public private(set) var messages: [[[UInt8]]] = []
    /// When the backlog last started or moved (a backlog that stands still for the heartbeat
    /// timeout means the peer is not reading).
    public private(set) var since = 0.0

    public init() {}

    public var isEmpty: Bool { messages.isEmpty }
    public var count: Int { messages.count }

    public mutating func append(_ frames: [[UInt8]], now: Double) {
        if messages.isEmpty { since = now }
        messages.append(frames)
    }

    public mutating func clear() { messages = [] }

    /// How a flush ended: everything sent, stopped at a full queue, or a send failed for
    /// another reason (the failed message and everything behind it are still queued).
    public enum Flush: Equatable {
        case drained
        case full
        case failed(TransportError)
    }

    /// Sends queued messages in order until one meets a full queue or fails.
    public mutating func flush(now: Double, _ send: ([[UInt8]]) throws(TransportError) -> Void) -> Flush {
        var sent = 0
        var outcome = Flush.drained
        for frames in messages {
            do {
                try send(frames)
                sent += 1
            } catch .full {
                outcome = .full
                break
            } catch {
                outcome = .failed(error)
                break
            }
        }
        if sent > 0 {
            messages.removeFirst(sent)
            since = now
        }
        return outcome
    }

    /// Non-empty and has not moved for longer than `timeout`.
    public func isStalled(now: Double, timeout: Double) -> Bool {
        !messages.isEmpty && now - since > timeout
    }
}
