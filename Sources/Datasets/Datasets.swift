// module Datasets
