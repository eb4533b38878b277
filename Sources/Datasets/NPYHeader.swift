/// The parsed header dict of an `.npy` file: dtype string, memory order and shape.
struct NPYHeader: Equatable {
    /// The numpy dtype string, e.g. `<f4`.
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]

    /// Parses the header text (the bytes between the length field and the data).
    init(_ text: [UInt8], name: String) throws {
        let literal: PythonLiteral
        do {
            literal = try PythonLiteral.parse(text)
        } catch let e as PythonLiteral.SyntaxError {
            throw DatasetError.malformed(name: name, problem: "NPY header is not a Python literal: \(e.problem) "
                + "at header byte \(e.offset) in \"\(String(decoding: text.prefix(200), as: UTF8.self))\"")
        }
        guard case let .dict(entries) = literal else {
            throw DatasetError.malformed(name: name, problem: "NPY header is not a dict")
        }
        let keys = Set(entries.keys)
        guard keys == ["descr", "fortran_order", "shape"] else {
            throw DatasetError.malformed(
                name: name, problem: "NPY header keys are \(keys.sorted()), expected exactly ['descr', 'fortran_order', 'shape']")
        }
        switch entries["descr"] {
        case let .string(d)?: descr = d
        default:
            throw DatasetError.unsupported(name: name, found: "structured or non-string dtype \(entries["descr"].map { "\($0)" } ?? "nil")",
                                           supported: "plain numeric dtypes such as '<f4'")
        }
        guard case let .boolean(f)? = entries["fortran_order"] else {
            throw DatasetError.malformed(name: name, problem: "'fortran_order' is not True or False")
        }
        fortranOrder = f
        var dims: [Int] = []
        if case let .tuple(items)? = entries["shape"] {
            for item in items {
                guard case let .integer(d) = item, d >= 0 else { dims = [-1]; break }
                dims.append(d)
            }
        } else {
            dims = [-1]
        }
        guard !dims.contains(-1) else {
            throw DatasetError.malformed(name: name, problem: "'shape' is not a tuple of non-negative integers")
        }
        shape = dims
    }

    /// The element kind (`f`, `i`, `u`, `b`) and byte size, after checking the byte order.
    func elementType(name: String) throws -> (kind: Character, size: Int) {
        let chars = Array(descr)
        guard chars.count >= 3, "<>|=".contains(chars[0]), let size = Int(String(chars[2...])),
              "fiub".contains(chars[1]) else {
            throw DatasetError.unsupported(name: name, found: "dtype '\(descr)'",
                                           supported: "'<f4', '<f8', '|b1', '|u1', '|i1', '<u2', '<i2', '<u4', '<i4', '<u8', '<i8'")
        }
        if chars[0] == ">" && size > 1 {
            throw DatasetError.unsupported(name: name, found: "big-endian dtype '\(descr)'",
                                           supported: "little-endian data (convert with arr.astype(arr.dtype.newbyteorder('<')))")
        }
        return (chars[1], size)
    }
}
