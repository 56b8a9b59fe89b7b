# SPDX-License-Identifier: MIT
# A make workload for the preload test (make -f workload.mk N=...): thousands of generated targets and
# variables, pattern substitution, foreach/call/sort. Prints computed values; builds nothing on disk.
N ?= 2000
.DEFAULT_GOAL := all
nums := $(shell seq 1 $(N))
names := $(foreach i,$(nums),obj_$(i)_$(word $(words x $(subst 1, ,$(i))),a b c d e f g h))
define rule
$(1).o: $(1).c
	@:
$(1).c:
	@:
endef
$(foreach n,$(names),$(eval $(call rule,$(n))))
objs := $(patsubst %,%.o,$(names))
sorted := $(sort $(names))
vowels := $(filter %_a %_e,$(names))
all: $(objs)
	@echo "targets $(words $(objs)) first $(firstword $(sorted)) last $(lastword $(sorted))"
	@echo "vowels $(words $(vowels)) $(wordlist 1,3,$(vowels))"
	@echo "subst $(words $(subst _, ,$(names)))"
