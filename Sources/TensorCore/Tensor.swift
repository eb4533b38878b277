/// A dense, contiguous, row-major tensor that owns its elements (copy-on-write).
///
/// `Tensor` is the currency between layers: datasets, samples, file formats. The tape keeps
/// its activations in an arena instead, so a training step allocates nothing.
public struct Tensor<T: Scalar>: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var storage: [T]

    public init(shape: [Int], storage: [T]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == storage.count,
                     "shape \(shape) holds \(shape.reduce(1, *)) elements, storage has \(storage.count)")
        self.shape = shape
        self.storage = storage
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, storage: [T](repeating: 0, count: shape.reduce(1, *)))
    }

    public init(shape: [Int], repeating value: T) {
        self.init(shape: shape, storage: [T](repeating: value, count: shape.reduce(1, *)))
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// Number of rows when the tensor is viewed as (N, rest): the sample count.
    public var rows: Int { shape.first ?? 1 }
    /// Elements per row when the tensor is viewed as (N, rest): the data dimension.
    public var rowSize: Int { shape.count <= 1 ? (shape.first == nil ? 1 : 1) : shape.dropFirst().reduce(1, *) }

    /// The same elements under another shape with the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }

    /// Rows `range` of the (N, rest) view.
    public func rows(_ range: Range<Int>) -> Tensor {
        let d = rowSize
        var s = shape
        s[0] = range.count
        return Tensor(shape: s, storage: Array(storage[(range.lowerBound * d)..<(range.upperBound * d)]))
    }

    /// The rows at `indices`, in that order.
    public func gather(rows indices: [Int]) -> Tensor {
        let d = rowSize
        var out = [T](repeating: 0, count: indices.count * d)
        storage.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for (j, i) in indices.enumerated() {
                    precondition(i >= 0 && i < rows, "row \(i) out of range 0..<\(rows)")
                    (dst.baseAddress! + j * d).update(from: src.baseAddress! + i * d, count: d)
                }
            }
        }
        var s = shape
        s[0] = indices.count
        return Tensor(shape: s, storage: out)
    }

    public subscript(row i: Int) -> ArraySlice<T> {
        let d = rowSize
        return storage[(i * d)..<((i + 1) * d)]
    }

    /// Converts every element to another scalar type.
    public func converted<U: Scalar>(to: U.Type = U.self) -> Tensor<U> {
        Tensor<U>(shape: shape, storage: storage.map { U($0) })
    }

    /// True when no element is NaN or infinite.
    public var isFinite: Bool { storage.allSatisfy { $0.isFinite } }

    /// Index of the first non-finite element, if any. Float (every dataset and gradient) goes
    /// through the vectorised `firstNonFinite`; the generic scan took 30% of `dataset verify`.
    public var firstNonFiniteIndex: Int? {
        storage.withUnsafeBufferPointer { p -> Int? in
            guard let base = p.baseAddress else { return nil }
            if T.self == Float.self {
                return firstNonFinite(UnsafeRawPointer(base).assumingMemoryBound(to: Float.self), p.count)
            }
            return p.firstIndex { !$0.isFinite }
        }
    }
}

extension Tensor {
    /// Concatenates tensors along the first axis; all must share the trailing shape.
    public static func concatenate(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty, "nothing to concatenate")
        let tail = Array(parts[0].shape.dropFirst())
        var storage: [T] = []
        storage.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        var n = 0
        for p in parts {
            precondition(Array(p.shape.dropFirst()) == tail, "trailing shapes differ: \(p.shape) vs \(tail)")
            storage.append(contentsOf: p.storage)
            n += p.rows
        }
        return Tensor(shape: [n] + tail, storage: storage)
    }
}
