/// Euclidean norm of `n` values, accumulated in Float over blocks of 4096 and in Double across
/// blocks (fast, and accurate enough for logs and clipping decisions).
public func euclideanNorm(_ g: UnsafePointer<Float>, _ n: Int) -> Double {
    var acc = 0.0
    var j = 0
    while j < n {
        let end = min(j + 4096, n)
        var part: Float = 0
        for i in j..<end { part += g[i] * g[i] }
        acc += Double(part)
        j = end
    }
    return acc.squareRoot()
}

/// Index of the first NaN or infinity among `n` values, if any.
public func firstNonFinite(_ p: UnsafePointer<Float>, _ n: Int) -> Int? {
    var i = 0
    while i < n {
        let end = min(i + 4096, n)
        var acc: Float = 0
        for j in i..<end { acc += p[j] * 0 }   // NaN for NaN or infinity, 0 otherwise
        if !acc.isFinite {
            for j in i..<end where !p[j].isFinite { return j }
        }
        i = end
    }
    return nil
}
