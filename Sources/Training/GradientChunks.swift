import TensorCore

/// How a model's gradient is cut for transfer: contiguous ranges of `target` values (the last
/// one shorter), cut without regard to parameter slots, so a chunk can leave as soon as the
/// backward pass has finished every slot it overlaps (the last layers first) while the rest of
/// the pass runs. Equal chunks are also what lets the sharded reduction give each range owner
/// the same share: with whole slots (the plan before), the reference MLP (d = 784, width 1024,
/// 4 blocks) was cut into ten 1 Mi-value layers and seven bias-sized chunks, so at 8 owners one
/// of them reduced 21% of the parameters instead of 12.5% and its link carried 1.29x a ring's
/// bytes; with 256 Ki-value chunks (39 chunks) the busiest owner is within 2% at 2 to 8 owners.
public enum GradientChunks {
    /// Default target: 256 Ki values (1 MB of floats).
    public static let defaultTarget = 1 << 18

    public static func plan(_ layout: ParameterLayout, target: Int = defaultTarget) -> [Range<Int>] {
        let n = layout.count, size = max(target, 1)
        guard n > 0 else { return [0..<0] }
        return stride(from: 0, to: n, by: size).map { $0..<min($0 + size, n) }
    }
}

/// Turns "slot s is final" into "the chunks whose every slot is final" during one backward pass.
final class ChunkTracker {
    /// Per slot: the chunks it overlaps (a zero-size slot: the chunk holding its offset).
    private let chunksOfSlot: [Range<Int>]
    private var remaining: [Int]
    private let initial: [Int]
    private var reported: [Bool]

    init(layout: ParameterLayout, chunks: [Range<Int>]) {
        var counts = [Int](repeating: 0, count: chunks.count)
        chunksOfSlot = layout.slots.map { slot in
            let first = chunks.firstIndex { $0.contains(slot.offset) } ?? chunks.count - 1
            var last = first
            while last + 1 < chunks.count && chunks[last].upperBound < slot.offset + slot.count { last += 1 }
            for c in first...last { counts[c] += 1 }
            return first..<(last + 1)
        }
        initial = counts
        remaining = counts
        reported = [Bool](repeating: false, count: chunks.count)
    }

    func reset() {
        remaining = initial
        for i in reported.indices { reported[i] = false }
    }

    /// The chunks that became complete with `slot` (in order).
    func slotReady(_ slot: Int) -> [Int] {
        var done: [Int] = []
        for c in chunksOfSlot[slot] {
            remaining[c] -= 1
            if remaining[c] == 0 && !reported[c] {
                reported[c] = true
                done.append(c)
            }
        }
        return done
    }

    /// Chunks not reported yet (slots the pass did not touch: their gradient is zero).
    func unreported() -> [Int] {
        reported.indices.filter { !reported[$0] }.reversed()
    }
}
