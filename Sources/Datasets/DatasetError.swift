import Foundation

/// Why a data file, a dataset or a dataset parameter was rejected.
///
/// Every message names the file (or the tensor), says what was expected and what was found,
/// and says what to do about it. `name` is a file path, or a label such as `"<bytes>"` when a
/// pure decoder was handed bytes that came from somewhere else.
public enum DatasetError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// A dataset was not found in any of the places searched.
    case notFound(dataset: String, searched: [String], hint: String)
    /// The byte count differs from what the header implies (truncated, or trailing bytes).
    case wrongLength(name: String, expectedBytes: Int, actualBytes: Int)
    /// The file does not start with the signature of its format.
    case badMagic(name: String, format: String, expected: String, found: String)
    /// A well-formed file uses a feature (dtype, version, byte order, layout) we do not read.
    case unsupported(name: String, found: String, supported: String)
    /// A shape or a count differs from what the caller or the format requires.
    case badShape(name: String, expected: String, found: String)
    /// The bytes are not a valid instance of the format (header syntax, corrupt stream, checksum).
    case malformed(name: String, problem: String)
    /// A tensor holds NaN or an infinity; `sample` is the row and `position` the index inside it.
    case nonFinite(name: String, sample: Int, position: Int, value: Float)
    /// A parameter passed by the caller is outside its domain.
    case invalidArgument(what: String, expected: String, found: String)

    public var description: String {
        switch self {
        case let .notFound(dataset, searched, hint):
            return "\(dataset) not found; searched: \(searched.joined(separator: ", ")). \(hint)"
        case let .wrongLength(name, expected, actual):
            let what = actual < expected ? "truncated" : "has trailing bytes"
            return "\(name): \(what): the header implies \(expected) bytes, the file has \(actual). "
                + "The file is incomplete or corrupt: re-create or re-download it."
        case let .badMagic(name, format, expected, found):
            return "\(name): not a \(format) file: expected it to start with \(expected), found \(found). "
                + "Check the path and the file type."
        case let .unsupported(name, found, supported):
            return "\(name): unsupported \(found); supported: \(supported). Convert the file (e.g. with numpy) to a supported form."
        case let .badShape(name, expected, found):
            return "\(name): wrong shape: expected \(expected), found \(found). Check that the file holds the data you meant."
        case let .malformed(name, problem):
            return "\(name): malformed: \(problem). The file is corrupt or was not written by a conforming writer: re-create it."
        case let .nonFinite(name, sample, position, value):
            return "\(name): non-finite value \(value) at sample \(sample), position \(position). "
                + "Clean the data (or find where the NaN/Inf came from) before using it."
        case let .invalidArgument(what, expected, found):
            return "invalid \(what): expected \(expected), got \(found)."
        }
    }

    public var errorDescription: String? { description }
}
