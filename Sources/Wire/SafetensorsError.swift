import Foundation

/// Why safetensors bytes or a safetensors file were rejected; the message says what to do.
///
/// `name` is a file path, or `"<bytes>"` (or another label) for bytes decoded in memory.
public enum SafetensorsError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// Fewer bytes than the header length field (or a tensor's offsets) require.
    case truncated(name: String, expectedBytes: Int, actualBytes: Int)
    /// The header is not valid UTF-8 JSON of the safetensors shape.
    case invalidHeader(name: String, problem: String)
    /// Two tensors share a name (in a file, or in what the caller asked to encode).
    case duplicateName(name: String, tensor: String)
    case unsupportedDType(name: String, tensor: String, dtype: String)
    /// A tensor's `data_offsets` are out of range, overlap another's, leave a gap, or do not
    /// match its shape and dtype.
    case badOffsets(name: String, tensor: String, problem: String)
    /// A tensor holds NaN or an infinity at flat index `index`.
    case nonFinite(name: String, tensor: String, index: Int, value: Float)
    /// Something the caller asked to encode cannot be represented.
    case invalidArgument(problem: String)

    public var description: String {
        switch self {
        case let .truncated(name, expected, actual):
            return "\(name): truncated safetensors data: need \(expected) bytes, have \(actual). "
                + "The file is incomplete (interrupted write or copy?): use an intact copy."
        case let .invalidHeader(name, problem):
            return "\(name): invalid safetensors header: \(problem). The file is corrupt or not a safetensors file."
        case let .duplicateName(name, tensor):
            return "\(name): tensor name \"\(tensor)\" appears twice. Give every tensor a unique name."
        case let .unsupportedDType(name, tensor, dtype):
            return "\(name): tensor \"\(tensor)\" has dtype \(dtype); supported: F32, F64 (read as Float). "
                + "Convert it to float32 before saving."
        case let .badOffsets(name, tensor, problem):
            return "\(name): tensor \"\(tensor)\": \(problem). The file is corrupt or was written by a non-conforming writer."
        case let .nonFinite(name, tensor, index, value):
            return "\(name): tensor \"\(tensor)\" holds \(value) at flat index \(index). "
                + "The saved state diverged: use an earlier checkpoint (or pass allowNonFinite to inspect it)."
        case let .invalidArgument(problem):
            return "cannot encode safetensors: \(problem)."
        }
    }

    public var errorDescription: String? { description }
}
