import Datasets
import Foundation
import Testing

/// `ambient dataset subset` and `merge` through the command line: two folds merge back into the
/// same files, and wrong input is refused with a message that says what to do.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DatasetFoldCommandTests {
    @Test func subsetAndMergeGiveTheDatasetBack() throws {
        let dir = try scratchDirectory("folds")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/data"
        let make = try CommandRunner.run(["dataset", "make", "--source", "gmm:dim=3,count=101", "--corrupt", "noise:0.4",
                                          "--clean-fraction", "0.2", "--out", data, "--quiet"])
        #expect(make.status == 0, "\(make.stderr)")
        for k in 0..<2 {
            let r = try CommandRunner.run(["dataset", "subset", "--data", data, "--fold", "\(k)/2", "--out", dir + "/f\(k)"])
            #expect(r.status == 0 && r.stderr.contains("fold \(k)/2"), "\(r.stderr)")
        }
        let f1 = try DatasetDirectory(path: dir + "/f1").read()
        #expect(f1.count == 50 && f1.manifest.fold == "1/2 of \(data)")
        let wrongOrder = try CommandRunner.run(["dataset", "merge", dir + "/f1", dir + "/f0", "--out", dir + "/bad"])
        #expect(wrongOrder.status != 0 && wrongOrder.stderr.contains("fold 0 first"), "\(wrongOrder.stderr)")
        let m = try CommandRunner.run(["dataset", "merge", dir + "/f0", dir + "/f1", "--out", dir + "/merged"])
        #expect(m.status == 0, "\(m.stderr)")
        for file in ["samples.npy", "clean.npy"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: data + "/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/merged/" + file))
            #expect(a == b, "\(file) differs after subset and merge")
        }
        let badFold = try CommandRunner.run(["dataset", "subset", "--data", data, "--fold", "2/2", "--out", dir + "/bad2"])
        #expect(badFold.status != 0 && badFold.stderr.contains("K/N"), "\(badFold.stderr)")
        let empty = try CommandRunner.run(["dataset", "subset", "--data", data, "--fold", "200/300", "--out", dir + "/bad3"])
        #expect(empty.status != 0 && empty.stderr.contains("empty"), "\(empty.stderr)")
    }
}
