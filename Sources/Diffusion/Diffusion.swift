// module Diffusion
