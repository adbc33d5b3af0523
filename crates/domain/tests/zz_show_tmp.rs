use modelgen_domain::*;
#[test]
fn show() {
    let t = PromptTemplates::builtin();
    let p = BodyProfile::parse(BodyProfileInput { gender: Some("女".into()), height_cm: Some(165.0), weight_kg: Some(52.5), age: Some(28.0), skin_tone: Some("白皙".into()), body_shape: Some("梨形".into()) }).unwrap();
    let d = t.render_default(&p).unwrap();
    println!("---DEFAULT ({})\n{d}", d.chars().count());
    let e = t.render_edit(&EditInstructions::parse("把头发改成黑色短发，戴上眼镜").unwrap()).unwrap();
    println!("---EDIT ({})\n{e}", e.chars().count());
    for a in Angle::ALL { let o = t.render_outfit(*a, 3).unwrap(); println!("---OUTFIT {a} ({})\n{o}", o.chars().count()); }
    println!("{}", ImageInputError::InvalidBase64{position: Some(3), reason: "invalid character"});
}
