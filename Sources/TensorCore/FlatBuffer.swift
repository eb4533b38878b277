/// A fixed-size buffer of scalars at a stable address for the lifetime of the object.
///
/// `Array.withUnsafeBufferPointer` gives a pointer only for the duration of its closure: a pointer
/// returned out of it (as a `ReplicatedState.parameters` or a gradient buffer must be) is undefined
/// behaviour, since the array may move or be copied on write. This class owns its memory, so the
/// pointers it hands out stay valid as long as the object lives.
public final class FlatBuffer<T: Scalar>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public let count: Int

    /// `count` zeros.
    public init(count: Int) {
        precondition(count >= 0, "negative buffer size \(count)")
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        zeroFill(pointer, max(count, 1))
    }

    /// A copy of `values`.
    public convenience init(copying values: [T]) {
        self.init(count: values.count)
        load(values)
    }

    deinit { pointer.deallocate() }

    public var buffer: UnsafeMutableBufferPointer<T> { .init(start: pointer, count: count) }

    public subscript(i: Int) -> T {
        get { precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)"); return pointer[i] }
        set { precondition(i >= 0 && i < count, "index \(i) out of 0..<\(count)"); pointer[i] = newValue }
    }

    /// Replaces the contents with `values` (same count).
    public func load(_ values: [T]) {
        precondition(values.count == count, "loading \(values.count) values into a buffer of \(count)")
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: count) }
    }

    public func zero() { zeroFill(pointer, max(count, 1)) }

    /// The contents as an array (a copy).
    public var array: [T] { Array(buffer) }
}
