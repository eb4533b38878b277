/// One named parameter tensor inside the flat parameter buffer.
public struct ParameterSlot: Sendable, Equatable, Codable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// The names, shapes and offsets of every parameter of a model, in a fixed order.
/// Built once by a network; the flat buffers of a `ParameterStore` follow it.
public struct ParameterLayout: Sendable, Equatable, Codable {
    public private(set) var slots: [ParameterSlot] = []
    public private(set) var count = 0

    public init() {}

    /// Appends a parameter and returns its slot index.
    @discardableResult
    public mutating func add(_ name: String, shape: [Int]) -> Int {
        precondition(!slots.contains { $0.name == name }, "duplicate parameter name \(name)")
        let slot = ParameterSlot(name: name, shape: shape, offset: count)
        slots.append(slot)
        count += slot.count
        return slots.count - 1
    }

    public func index(of name: String) -> Int? { slots.firstIndex { $0.name == name } }
}

/// All parameters of a model in one flat buffer, and their gradients in a second buffer of
/// the same layout (as in llm.c): zeroing gradients is one fill, the optimiser is one loop,
/// a gradient message is one contiguous buffer.
public final class ParameterStore<T: Scalar>: @unchecked Sendable {
    public let layout: ParameterLayout
    /// Parameters, `layout.count` elements.
    public let values: UnsafeMutablePointer<T>
    /// Gradients, same layout as `values`.
    public let grads: UnsafeMutablePointer<T>
    public var count: Int { layout.count }

    public init(layout: ParameterLayout) {
        self.layout = layout
        let n = max(layout.count, 1)
        values = .allocate(capacity: n)
        values.initialize(repeating: 0, count: n)
        grads = .allocate(capacity: n)
        grads.initialize(repeating: 0, count: n)
    }

    deinit {
        values.deallocate()
        grads.deallocate()
    }

    public func value(_ slot: Int) -> UnsafeMutablePointer<T> { values + layout.slots[slot].offset }
    public func grad(_ slot: Int) -> UnsafeMutablePointer<T> { grads + layout.slots[slot].offset }

    public func zeroGrads() { T.fill(grads, 0, layout.count) }

    public var valueBuffer: UnsafeMutableBufferPointer<T> { .init(start: values, count: layout.count) }
    public var gradBuffer: UnsafeMutableBufferPointer<T> { .init(start: grads, count: layout.count) }

    /// A copy of the parameters as an array (for checkpoints and tests).
    public func snapshot() -> [T] { Array(valueBuffer) }

    public func load(_ source: [T]) {
        precondition(source.count == layout.count, "parameter count \(source.count) != \(layout.count)")
        source.withUnsafeBufferPointer { values.update(from: $0.baseAddress!, count: layout.count) }
    }

    public func copy(from other: ParameterStore<T>) {
        precondition(other.layout == layout, "layouts differ")
        values.update(from: other.values, count: layout.count)
    }

    /// Fills every parameter with `scale * N(0, 1)` (tests; networks use their own initialisers).
    public func fillNormal(_ rng: inout CounterRNG, scale: Double) {
        for i in 0..<layout.count { values[i] = T(rng.normal() * scale) }
    }

    /// Named tensors for export.
    public func tensors() -> [(name: String, tensor: Tensor<T>)] {
        layout.slots.map { slot in
            (slot.name, Tensor(shape: slot.shape,
                               storage: Array(UnsafeBufferPointer(start: values + slot.offset, count: slot.count))))
        }
    }
}
