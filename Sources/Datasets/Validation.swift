import TensorCore

/// Throws `DatasetError.nonFinite` naming the first NaN or infinite element of `t`, as a sample
/// (row of the `[N, ...]` view) and a position inside that sample.
public func validateFinite<T: Scalar>(_ t: Tensor<T>, name: String) throws {
    guard let i = t.firstNonFiniteIndex else { return }
    let rowSize = max(t.rowSize, 1)
    let (sample, position) = t.rank == 0 ? (0, 0) : i.quotientAndRemainder(dividingBy: rowSize)
    throw DatasetError.nonFinite(name: name, sample: sample, position: position, value: Float(t.storage[i]))
}
