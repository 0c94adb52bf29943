"""UnSAMv2 core library: model building, checkpoints, cached prediction, masks.

Import what you use from its module (`core_model.build.build_model`,
`core_model.predictor.GranularityPredictor`, `core_model.types.Prompts`, ...). Importing the
package itself is cheap: it loads neither torch nor sam2.
"""
