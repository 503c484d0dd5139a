//! Statistics over seeds: a sweep whose grid has a `run.seed` axis reports, per setting, the
//! mean and the 95% confidence interval over its seeds (`seeds.csv`), and `lena tune` then
//! chooses the setting by its mean cost over seeds, never by its luckiest seed.

pub use lena_plot::stats::mean_ci;

/// A sweep label (`key=value` parts joined by `;`) without its `run.seed` part: the setting
/// the seeds are repetitions of (`base` when nothing else varies).
pub fn without_seed(label: &str) -> String {
    let rest: Vec<&str> = label
        .split(';')
        .filter(|part| !part.starts_with("run.seed="))
        .collect();
    if rest.is_empty() {
        "base".into()
    } else {
        rest.join(";")
    }
}

/// Runs grouped by setting, in the order each setting first appears: `(setting, run indices)`.
pub fn group(labels: &[&str]) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let key = without_seed(label);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_group_by_the_rest_of_the_label() {
        let labels = [
            "algorithm.step_size=0.1;run.seed=1",
            "algorithm.step_size=0.1;run.seed=2",
            "algorithm.step_size=0.5;run.seed=1",
            "algorithm.step_size=0.5;run.seed=2",
        ];
        assert_eq!(
            group(&labels),
            vec![
                ("algorithm.step_size=0.1".to_string(), vec![0, 1]),
                ("algorithm.step_size=0.5".to_string(), vec![2, 3]),
            ]
        );
        assert_eq!(without_seed("run.seed=3"), "base");
    }
}
