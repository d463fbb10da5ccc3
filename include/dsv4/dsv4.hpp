// dsv4/dsv4.hpp - everything. Include the family headers instead to keep builds lean.
#pragma once

#include "attention.hpp"
#include "codec.hpp"
#include "compressor.hpp"
#include "executor.hpp"
#include "gemv.hpp"
#include "hadamard.hpp"
#include "indexer.hpp"
#include "mhc.hpp"
#include "moe.hpp"
#include "parallel.hpp"
#include "formats.hpp"
#include "isa.hpp"
#include "norm.hpp"
#include "rope.hpp"
#include "topk.hpp"
