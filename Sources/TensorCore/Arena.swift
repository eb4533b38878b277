/// A bump allocator for a step's activations and their gradients.
///
/// `reset()` makes all memory reusable. The first step grows the arena as needed; when a step
/// needed more than one chunk, the next reset merges them into one, so after the first step a
/// training step with the same shapes allocates nothing.
public final class Arena<T: Scalar> {
    private var chunks: [(base: UnsafeMutablePointer<T>, capacity: Int)] = []
    private var current = 0
    private var used = 0
    private var peakTotal = 0
    private var totalThisRound = 0
    /// Allocations are aligned to 64 bytes' worth of elements.
    private let alignment = 64 / MemoryLayout<T>.stride

    public init(initialCapacity: Int = 1 << 16) {
        let c = max(initialCapacity, 1024)
        chunks.append((.allocate(capacity: c), c))
    }

    deinit {
        for c in chunks { c.base.deallocate() }
    }

    /// `count` uninitialised elements, valid until the next `reset()`.
    public func allocate(_ count: Int) -> UnsafeMutablePointer<T> {
        let n = (max(count, 1) + alignment - 1) / alignment * alignment
        totalThisRound += n
        while true {
            if used + n <= chunks[current].capacity {
                let p = chunks[current].base + used
                used += n
                return p
            }
            current += 1
            used = 0
            if current == chunks.count {
                let c = max(n, chunks[current - 1].capacity * 2)
                chunks.append((.allocate(capacity: c), c))
            }
        }
    }

    /// `count` zeroed elements.
    public func allocateZeroed(_ count: Int) -> UnsafeMutablePointer<T> {
        let p = allocate(count)
        T.fill(p, 0, count)
        return p
    }

    /// Releases everything allocated since the last reset.
    public func reset() {
        peakTotal = max(peakTotal, totalThisRound)
        if current > 0 {
            // Merge into one chunk large enough for the whole round.
            for c in chunks { c.base.deallocate() }
            let c = peakTotal + peakTotal / 4
            chunks = [(.allocate(capacity: c), c)]
        }
        current = 0
        used = 0
        totalThisRound = 0
    }

    /// Elements reserved across all chunks.
    public var capacity: Int { chunks.reduce(0) { $0 + $1.capacity } }
}
