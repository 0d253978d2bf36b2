// One numerics case of DESIGN.md §6 and the function that runs it through the public C ABI.
#pragma once

#include <cstdint>
#include <string>

#include "reference.h"

namespace num {

struct Case {
    std::string name;
    ref::Spec s;
    int dtype = ref::kFp32;
    int layout = 0;              // tu::Layout of the inputs (outputs use a layout they may have)
    bool buffers_api = false;    // fsig_attention_*_buffers instead of the descriptor-data form
    bool backward = true;        // also run and check the backward
    bool with_lse = true;        // softmax forward: ask for the LSE
    bool out_for_pointwise = false;  // pointwise backward: pass the (optional) forward output anyway
    uint64_t seed = 1;
};

// Runs forward (and backward) of the case on fresh random inputs and checks every output against
// the §6 rule, stray writes outside the outputs' views and unchanged inputs. Failures are recorded in
// the harness; returns true when the case passed.
bool run_case(const Case& c, bool verbose);

// Multiply–accumulates the references need (a cost estimate used to keep the CI tier small).
double reference_cost(const Case& c);

}  // namespace num
