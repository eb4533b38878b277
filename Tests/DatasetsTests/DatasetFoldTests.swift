import Foundation
import Testing
import TensorCore
@testable import Datasets

/// Folds for cross-fitting (`ambient dataset subset` / `merge`): cutting a dataset into its N
/// interleaved folds and merging them gives it back, every per-sample file included, and a merge
/// refuses folds out of order or of the wrong size.
@Suite struct DatasetFoldTests {
    /// 11 samples (an odd count, so folds differ in size) with every per-sample file.
    static func contents(count n: Int = 11) -> DatasetDirectory.Contents {
        var m = DatasetDirectory.Manifest(source: "test", corruption: "blur:0.6", cleanFraction: 0.25, seed: 3, count: n,
                                          sampleShape: [1, 2, 2])
        m.annotation = "whole"
        return .init(manifest: m, samples: Tensor(shape: [n, 1, 2, 2], storage: (0..<(4 * n)).map { Float($0) / 7 }),
                     masks: Tensor(shape: [n, 1, 2, 2], storage: (0..<(4 * n)).map { Float(($0 / 3) % 2) }),
                     noise: (0..<n).map { Double($0) * 0.1 }, annotations: (0..<n).map { Double($0) + 0.5 },
                     sigmaMax: (0..<n).map { 80 - Double($0) }, labels: (0..<n).map { $0 % 10 },
                     clean: (0..<n).map { $0 < 3 })
    }

    @Test func foldsParseAndNameTheirRows() throws {
        let f = try DatasetFold(parsing: "1/3")
        #expect(f.index == 1 && f.count == 3 && f.description == "1/3")
        #expect(f.rows(of: 8) == [1, 4, 7])
        #expect(try DatasetFold(parsing: "0/1").rows(of: 3) == [0, 1, 2])
        for bad in ["3/3", "-1/2", "1/0", "a/2", "1", "1/2/3", "", "/2"] {
            #expect(throws: DatasetError.self, "\(bad)") { try DatasetFold(parsing: bad) }
        }
    }

    @Test(arguments: [1, 2, 3, 4]) func cuttingIntoFoldsAndMergingIsTheIdentity(n: Int) throws {
        let whole = Self.contents()
        let parts = try (0..<n).map { try whole.fold(DatasetFold(index: $0, count: n), of: "/data/x", createdBy: "test") }
        for (k, p) in parts.enumerated() {
            #expect(p.manifest.fold == "\(k)/\(n) of /data/x" && p.count == p.manifest.count)
            #expect(p.labels == stride(from: k, to: 11, by: n).map { $0 % 10 })
            try DatasetDirectory.validate(p, name: "fold \(k)")
        }
        let back = try DatasetDirectory.Contents.interleaving(folds: parts, createdBy: "merge")
        #expect(back.samples.storage.map(\.bitPattern) == whole.samples.storage.map(\.bitPattern))
        #expect(back.masks?.storage == whole.masks?.storage)
        #expect(back.noise == whole.noise && back.annotations == whole.annotations && back.sigmaMax == whole.sigmaMax)
        #expect(back.labels == whole.labels && back.clean == whole.clean)
        #expect(back.manifest.count == 11 && back.manifest.fold == nil && back.manifest.source == "test")
        #expect(back.manifest.annotation == "whole" && abs(back.manifest.cleanFraction - 3.0 / 11) < 1e-12)
    }

    @Test func aFoldKeepsItsOwnCleanFractionAndMergedNotesStayPerFold() throws {
        let whole = Self.contents()
        var p0 = try whole.fold(DatasetFold(index: 0, count: 2), of: "x", createdBy: nil)
        var p1 = try whole.fold(DatasetFold(index: 1, count: 2), of: "x", createdBy: nil)
        #expect(p0.clean == [true, true, false, false, false, false] && abs(p0.manifest.cleanFraction - 2.0 / 6) < 1e-12)
        p0.manifest.annotation = "classifier B"
        p1.manifest.annotation = "classifier A"
        let back = try DatasetDirectory.Contents.interleaving(folds: [p0, p1], createdBy: nil)
        #expect(back.manifest.annotation == "fold 0/2: classifier B; fold 1/2: classifier A")
    }

    @Test func mergeRefusesFoldsOutOfOrderOfTheWrongSizeOrWithOtherFiles() throws {
        let whole = Self.contents()
        let p0 = try whole.fold(DatasetFold(index: 0, count: 2), of: "x", createdBy: nil)
        let p1 = try whole.fold(DatasetFold(index: 1, count: 2), of: "x", createdBy: nil)
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [p1, p0], createdBy: nil) }
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [p0], createdBy: nil) }
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [], createdBy: nil) }
        // Untagged parts (written by hand) are checked by size: 6 + 4 is not two folds of 10 (5 + 5).
        var q0 = p0, q1 = p1.selecting(rows: [0, 1, 2, 3], createdBy: nil)
        q0.manifest.fold = nil
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [q0, q1], createdBy: nil) }
        var noLabels = p1
        noLabels.labels = nil
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [p0, noLabels], createdBy: nil) }
        var otherShape = p1
        otherShape.manifest.sampleShape = [4]
        #expect(throws: DatasetError.self) { try DatasetDirectory.Contents.interleaving(folds: [p0, otherShape], createdBy: nil) }
    }
}
