import TensorCore

/// How a model's gradient is cut for transfer: contiguous ranges of whole parameter slots of
/// about `target` values, so a chunk can leave as soon as the backward pass has finished its
/// slots (the last layers first) while the rest of the pass runs.
public enum GradientChunks {
    /// Default target: 1 Mi values (4 MB), the size of one 1024 x 1024 layer of the reference MLP.
    public static let defaultTarget = 1 << 20

    public static func plan(_ layout: ParameterLayout, target: Int = defaultTarget) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0, end = 0
        for slot in layout.slots {
            if end > start && end - start + slot.count > target {
                ranges.append(start..<end)
                start = end
            }
            end = slot.offset + slot.count
        }
        if end > start { ranges.append(start..<end) }
        return ranges.isEmpty ? [0..<max(layout.count, 0)] : ranges
    }
}

/// Turns "slot s is final" into "chunk c is final" during one backward pass.
final class ChunkTracker {
    private let chunkOfSlot: [Int]
    private var remaining: [Int]
    private let initial: [Int]
    private var reported: [Bool]

    init(layout: ParameterLayout, chunks: [Range<Int>]) {
        var owner = [Int](repeating: 0, count: layout.slots.count)
        var counts = [Int](repeating: 0, count: chunks.count)
        for (i, slot) in layout.slots.enumerated() {
            let c = chunks.firstIndex { $0.contains(slot.offset) || (slot.count == 0 && $0.lowerBound == slot.offset) } ?? chunks.count - 1
            owner[i] = c
            counts[c] += 1
        }
        chunkOfSlot = owner
        initial = counts
        remaining = counts
        reported = [Bool](repeating: false, count: chunks.count)
    }

    func reset() {
        remaining = initial
        for i in reported.indices { reported[i] = false }
    }

    /// The chunk that became complete with `slot`, if any.
    func slotReady(_ slot: Int) -> Int? {
        let c = chunkOfSlot[slot]
        remaining[c] -= 1
        guard remaining[c] == 0, !reported[c] else { return nil }
        reported[c] = true
        return c
    }

    /// Chunks not reported yet (slots the pass did not touch: their gradient is zero).
    func unreported() -> [Int] {
        reported.indices.filter { !reported[$0] }.reversed()
    }
}
